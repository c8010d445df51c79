"""Choosing and setting up confinement, without a model (fast)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.worker.confinement import (
    CgroupV1Confinement,
    CgroupV2Confinement,
    ConfinementError,
    Limits,
    RlimitConfinement,
    create_confinement,
)
from tests.confinement import cgroup_under_test, expected_confinement
from tests.worker.conftest import memory_group

LIMITS = Limits(memory_bytes=300 << 20, cpu_quota_percent=150)


def test_rlimit_fallback_warns_that_confinement_is_weak() -> None:
    with capture_logs() as logs:
        conf = create_confinement(LIMITS, instance="t", choice="rlimit")
    assert isinstance(conf, RlimitConfinement)
    assert conf.child_args() == ["--rlimit-as", str(300 << 20)]
    assert conf.child_env()["MALLOC_ARENA_MAX"] == "2"
    events = [e for e in logs if e["event"] == "worker.confinement_weak"]
    assert events
    assert events[0]["log_level"] == "warning"


def test_explicit_choice_that_is_unavailable_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfinementError):
        create_confinement(LIMITS, instance="t", cgroup_parent=tmp_path, choice="cgroup-v2")


def test_auto_picks_what_this_machine_has_and_cleans_up() -> None:
    if expected_confinement() == "rlimit":
        # The machine has no cgroup for us (cgroup_under_test asserts that where it runs):
        # auto must fall back to RLIMIT_AS, nothing weaker.
        conf = create_confinement(LIMITS, instance="auto")
        assert conf.mode == "rlimit"
        assert conf.memory_limit_bytes(None) == 300 << 20
        return
    version = cgroup_under_test()
    conf = create_confinement(LIMITS, instance="auto")
    assert conf.mode == version
    assert conf.memory_limit_bytes(None) == 300 << 20
    assert conf.memory_events().oom_kills == 0
    if isinstance(conf, CgroupV1Confinement):
        group = conf.memory_path
        memsw = group / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            assert int(memsw.read_text()) == 300 << 20  # no swap to escape into
        cpu = [p for p in conf.other_paths if (p / "cpu.cfs_quota_us").exists()]
        if cpu:
            assert int((cpu[0] / "cpu.cfs_quota_us").read_text()) == 150_000
        paths = conf.paths
    else:
        assert isinstance(conf, CgroupV2Confinement)
        assert (conf.path / "memory.swap.max").read_text().strip() in {"0", ""}
        paths = [conf.path]
    assert f"edge-gateway-auto-{os.getpid()}-" in paths[0].name
    conf.close()
    assert not any(p.exists() for p in paths)


def test_cgroup_parent_overrides_where_the_group_is_made() -> None:
    version = cgroup_under_test()
    probe = create_confinement(LIMITS, instance="probe", choice=version)
    base = memory_group(probe)
    probe.close()
    parent = base.parent / f"edge-gateway-parent-{os.getpid()}"
    parent.mkdir()
    try:
        conf = create_confinement(LIMITS, instance="child", cgroup_parent=parent, choice=version)
        assert memory_group(conf).parent == parent
        assert conf.memory_limit_bytes(None) == 300 << 20
        conf.close()
    finally:
        parent.rmdir()
