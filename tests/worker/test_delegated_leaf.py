"""cgroup v2 delegation under systemd: the gateway leaves its unit group for a leaf first.

This machine has no delegated cgroup v2 memory controller, so the kernel side cannot run here;
the group is a directory tree with the same file names, which is what the code reads and writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.worker import confinement
from gateway.worker.confinement import Limits, create_confinement


def fake_unit_group(root: Path, members: list[int]) -> Path:
    group = root / "system.slice" / "edge-gateway.service"
    group.mkdir(parents=True)
    (group / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (group / "cgroup.subtree_control").write_text("")
    (group / "cgroup.procs").write_text("".join(f"{p}\n" for p in members))
    return group


def test_gateway_moves_to_a_leaf_then_creates_the_worker_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = fake_unit_group(tmp_path, [os.getpid()])
    monkeypatch.setattr(confinement, "own_v2_group", lambda: group)
    conf = create_confinement(
        Limits(memory_bytes=512 * 1024 * 1024, cpu_quota_percent=150),
        instance="gw1",
        choice="cgroup-v2",
    )
    assert conf.mode == "cgroup-v2"
    assert (group / "gateway" / "cgroup.procs").read_text() == str(os.getpid())
    assert (group / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"
    worker = next(p for p in group.iterdir() if p.name.startswith("edge-gateway-gw1-"))
    assert (worker / "memory.max").read_text() == str(512 * 1024 * 1024)
    assert conf.child_args() == ["--join-cgroup", str(worker / "cgroup.procs")]


def test_a_group_shared_with_other_processes_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = fake_unit_group(tmp_path, [os.getpid(), 1])
    monkeypatch.setattr(confinement, "own_v2_group", lambda: group)
    create_confinement(Limits(memory_bytes=1 << 28), instance="gw1", choice="cgroup-v2")
    assert not (group / "gateway").exists()
