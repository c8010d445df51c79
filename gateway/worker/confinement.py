"""Confining the model worker: the strongest of cgroup v2, cgroup v1, RLIMIT_AS, or nothing.

The gateway (parent) creates the group and writes its limits; the worker (child) moves ITSELF
into it as its very first action, before it imports llama.cpp or maps a model (see
`gateway.worker.server`). Doing it in the child avoids a `preexec_fn` (unsafe once the gateway
has threads) and avoids the race of the parent moving a child that is already loading.

One group per supervisor, reused across worker restarts, removed on stop. The kernel's OOM-kill
counter of the group (v2 `memory.events`, v1 `memory.oom_control`) is what lets the supervisor
tell "killed for memory" from any other SIGKILL.

Why the limit includes the model file: llama.cpp mmaps the GGUF, and in both cgroup versions
page cache of a mapped file is charged to the group that faults it in. The default 1 GiB is ~10x
the bundled 98 MB model plus a 46 MB embedding model and a 2k-token KV cache (~50 MB); a limit
close to the working set does not kill the worker but makes it thrash (re-reading the mapping).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from gateway.logging import get_logger
from gateway.worker.cgroupfs import (
    ConfinementError,
    int_or_none,
    maybe_v1_group,
    own_v1_group,
    own_v2_group,
    read_file,
    read_keyed,
    rmdir,
    write_file,
)

if TYPE_CHECKING:
    from gateway.config import WorkerConfig

log = get_logger(__name__)

ConfinementMode = Literal["cgroup-v2", "cgroup-v1", "rlimit", "none"]
ConfinementChoice = Literal["auto", "cgroup-v2", "cgroup-v1", "rlimit", "none"]

DEFAULT_PIDS_MAX = 256
"""Tasks (threads count) in the worker's group: llama.cpp starts one thread per core, so this
only stops a runaway, never a normal worker."""
_CPU_PERIOD_US = 100_000
_MEMORY_HIGH_FRACTION = 0.9
_group_counter = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Limits:
    memory_bytes: int
    cpu_quota_percent: int = 0
    pids_max: int = DEFAULT_PIDS_MAX

    @classmethod
    def from_config(cls, cfg: WorkerConfig, *, pids_max: int = DEFAULT_PIDS_MAX) -> Limits:
        return cls(
            memory_bytes=cfg.memory_limit_mb * 1024 * 1024,
            cpu_quota_percent=cfg.cpu_quota_percent,
            pids_max=pids_max,
        )


@dataclass(frozen=True, slots=True)
class MemoryEvents:
    """Cumulative counters of the group: kernel OOM kills, and times usage hit the limit."""

    oom_kills: int = 0
    limit_hits: int = 0


class Confinement(ABC):
    """What the supervisor needs from any confinement."""

    mode: ConfinementMode

    def child_args(self) -> list[str]:
        """Arguments of `gateway.worker.server` that make the child confine itself at start."""
        return []

    def child_env(self) -> dict[str, str]:
        return {}

    @abstractmethod
    def memory_limit_bytes(self, pid: int | None) -> int | None:
        """The limit as read back from the kernel (not as configured), None when there is none."""

    def memory_events(self) -> MemoryEvents:
        return MemoryEvents()

    def close(self) -> None:  # noqa: B027 - an optional hook: most modes create nothing
        """Remove what was created; the worker must have exited."""

    def describe(self) -> str:
        return self.mode


# ---------------------------------------------------------------------------------------------
# cgroup v2


class CgroupV2Confinement(Confinement):
    mode: ConfinementMode = "cgroup-v2"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last_events = MemoryEvents()

    def child_args(self) -> list[str]:
        return ["--join-cgroup", str(self.path / "cgroup.procs")]

    def memory_limit_bytes(self, pid: int | None) -> int | None:
        value = read_file(self.path / "memory.max")
        return None if value in (None, "max") else int_or_none(value)

    def memory_events(self) -> MemoryEvents:
        fields = read_keyed(self.path / "memory.events")
        if fields:
            self._last_events = MemoryEvents(
                oom_kills=fields.get("oom_kill", 0), limit_hits=fields.get("max", 0)
            )
        return self._last_events

    def close(self) -> None:
        self.memory_events()
        rmdir(self.path)

    def describe(self) -> str:
        return f"cgroup-v2:{self.path}"


def _setup_v2(
    parent: Path, name: str, limits: Limits, *, own_group: bool = False
) -> CgroupV2Confinement:
    """A child group of `parent` with memory (and cpu, pids if delegated) limits."""
    controllers = (read_file(parent / "cgroup.controllers") or "").split()
    if "memory" not in controllers:
        raise ConfinementError(f"{parent}: memory controller not delegated ({controllers})")
    wanted = [c for c in ("memory", "cpu", "pids") if c in controllers]
    enabled = (read_file(parent / "cgroup.subtree_control") or "").split()
    missing = [c for c in wanted if c not in enabled]
    if missing and own_group:
        _leave_for_leaf(parent)
    if missing:
        # Fails with EBUSY when `parent` holds processes (the "no internal processes" rule): then
        # it is not a delegated subtree we may use.
        write_file(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
    path = parent / name
    path.mkdir()
    try:
        write_file(path / "memory.max", str(limits.memory_bytes))
        high = int(limits.memory_bytes * _MEMORY_HIGH_FRACTION)
        write_file(path / "memory.high", str(high))
        if (path / "memory.swap.max").exists():
            write_file(path / "memory.swap.max", "0")
        if limits.cpu_quota_percent and (path / "cpu.max").exists():
            quota = _CPU_PERIOD_US * limits.cpu_quota_percent // 100
            write_file(path / "cpu.max", f"{quota} {_CPU_PERIOD_US}")
        if (path / "pids.max").exists():
            write_file(path / "pids.max", str(limits.pids_max))
    except OSError:
        rmdir(path)
        raise
    return CgroupV2Confinement(path)


GATEWAY_LEAF = "gateway"
"""Where the gateway moves itself inside a delegated unit group (see `_leave_for_leaf`)."""


def _leave_for_leaf(group: Path) -> None:
    """Move this process from `group` into `group/gateway` so `group` may enable controllers.

    Under systemd with `Delegate=`, the unit's cgroup is ours but holds the gateway itself, and
    cgroup v2's "no internal processes" rule refuses to enable controllers for children of a
    group with member processes (EBUSY). systemd 252 has no `DelegateSubgroup=` (added in 254),
    so the gateway does it: leaf for itself, sibling groups for the worker. Only when this
    process is the group's only member: anyone else's processes are not ours to move.
    """
    members = {int(p) for p in (read_file(group / "cgroup.procs") or "").split() if p.isdigit()}
    if members != {os.getpid()}:
        return
    leaf = group / GATEWAY_LEAF
    leaf.mkdir(exist_ok=True)
    write_file(leaf / "cgroup.procs", str(os.getpid()))
    log.info("worker.cgroup_leaf", moved_to=str(leaf), reason="delegated group needs a leaf")


# ---------------------------------------------------------------------------------------------
# cgroup v1


class CgroupV1Confinement(Confinement):
    mode: ConfinementMode = "cgroup-v1"

    def __init__(self, memory: Path, others: list[Path]) -> None:
        self.memory_path = memory
        self.other_paths = others
        self._last_events = MemoryEvents()

    @property
    def paths(self) -> list[Path]:
        return [self.memory_path, *self.other_paths]

    def child_args(self) -> list[str]:
        args: list[str] = []
        for path in self.paths:
            args += ["--join-cgroup", str(path / "cgroup.procs")]
        return args

    def memory_limit_bytes(self, pid: int | None) -> int | None:
        return int_or_none(read_file(self.memory_path / "memory.limit_in_bytes"))

    def memory_events(self) -> MemoryEvents:
        fields = read_keyed(self.memory_path / "memory.oom_control")
        failcnt = int_or_none(read_file(self.memory_path / "memory.failcnt"))
        if fields or failcnt is not None:
            self._last_events = MemoryEvents(
                oom_kills=fields.get("oom_kill", 0), limit_hits=failcnt or 0
            )
        return self._last_events

    def close(self) -> None:
        self.memory_events()
        for path in self.paths:
            rmdir(path)

    def describe(self) -> str:
        return f"cgroup-v1:{self.memory_path}"


def _setup_v1(
    memory_parent: Path, other_parents: list[Path], name: str, limits: Limits
) -> CgroupV1Confinement:
    """A memory group (required) plus cpu/pids groups (each only if writable)."""
    if not (memory_parent / "memory.limit_in_bytes").exists():
        raise ConfinementError(f"{memory_parent} is not a cgroup v1 memory hierarchy")
    memory = memory_parent / name
    memory.mkdir()
    try:
        write_file(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
        # No swap: memory+swap equals memory. Must follow limit_in_bytes (memsw >= limit).
        if (memory / "memory.memsw.limit_in_bytes").exists():
            write_file(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        with contextlib.suppress(OSError):
            write_file(memory / "memory.swappiness", "0")
    except OSError:
        rmdir(memory)
        raise
    others: list[Path] = []
    for parent in other_parents:
        group = parent / name
        try:
            group.mkdir()
            if (group / "cpu.cfs_quota_us").exists():
                if limits.cpu_quota_percent:
                    write_file(group / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
                    quota = _CPU_PERIOD_US * limits.cpu_quota_percent // 100
                    write_file(group / "cpu.cfs_quota_us", str(quota))
            elif (group / "pids.max").exists():
                write_file(group / "pids.max", str(limits.pids_max))
            others.append(group)
        except OSError as exc:
            rmdir(group)
            log.debug("worker.confinement_partial", hierarchy=str(parent), error=str(exc))
    return CgroupV1Confinement(memory, others)


# ---------------------------------------------------------------------------------------------
# RLIMIT_AS and none


class RlimitConfinement(Confinement):
    """Address-space limit: counts virtual memory (mappings, reserved thread stacks and malloc
    arenas), not what is resident, so it must be looser than a cgroup limit and still fails as a
    MemoryError or abort() rather than a clean kill. Better than nothing."""

    mode: ConfinementMode = "rlimit"

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes

    def child_args(self) -> list[str]:
        return ["--rlimit-as", str(self.limit_bytes)]

    def child_env(self) -> dict[str, str]:
        # glibc reserves up to 8 x cores arenas of 64 MiB of address space for threads.
        return {"MALLOC_ARENA_MAX": "2"}

    def memory_limit_bytes(self, pid: int | None) -> int | None:
        if pid is None:
            return self.limit_bytes
        try:
            soft, _hard = resource.prlimit(pid, resource.RLIMIT_AS)
        except (OSError, ValueError):
            return self.limit_bytes
        return None if soft == resource.RLIM_INFINITY else soft


class NoConfinement(Confinement):
    mode: ConfinementMode = "none"

    def memory_limit_bytes(self, pid: int | None) -> int | None:
        return None


# ---------------------------------------------------------------------------------------------
# Choice


def create_confinement(
    limits: Limits,
    *,
    instance: str,
    cgroup_parent: Path | None = None,
    choice: ConfinementChoice = "auto",
) -> Confinement:
    """Create the strongest confinement available (or exactly `choice`, raising if it fails).

    `cgroup_parent` is a writable cgroup directory (v2 delegated subtree, or a directory in the
    v1 memory hierarchy); unset, the gateway's own groups are used as parents.
    """
    name = f"edge-gateway-{instance}-{os.getpid()}-{next(_group_counter)}"
    reasons: dict[str, str] = {}
    if choice in ("auto", "cgroup-v2"):
        try:
            if cgroup_parent is None:
                return _setup_v2(own_v2_group(), name, limits, own_group=True)
            return _setup_v2(cgroup_parent, name, limits)
        except (ConfinementError, OSError) as exc:
            reasons["cgroup-v2"] = str(exc)
    if choice in ("auto", "cgroup-v1"):
        try:
            memory_parent = cgroup_parent or own_v1_group("memory")
            others = [p for p in (maybe_v1_group("cpu"), maybe_v1_group("pids")) if p]
            return _setup_v1(memory_parent, others, name, limits)
        except (ConfinementError, OSError) as exc:
            reasons["cgroup-v1"] = str(exc)
    if choice in ("auto", "rlimit"):
        log.warning(
            "worker.confinement_weak",
            mode="rlimit",
            limit_bytes=limits.memory_bytes,
            reasons=reasons,
            hint="delegate a cgroup (systemd Delegate=yes) for a real memory limit",
        )
        return RlimitConfinement(limits.memory_bytes)
    if choice == "none":
        return NoConfinement()
    raise ConfinementError(f"{choice} confinement is not available: {reasons}")
