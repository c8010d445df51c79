"""Reading and writing cgroup files: where this process's groups are, and small file I/O.

The cgroup filesystems are the kernel's interface; these helpers keep the parsing of
/proc/self/mountinfo and /proc/self/cgroup, and the tolerant reads of counters, in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.logging import get_logger

log = get_logger(__name__)

_PROC = Path("/proc")


class ConfinementError(Exception):
    """A confinement that was explicitly asked for cannot be set up."""


def own_v2_group() -> Path:
    """The unified-hierarchy directory of this process (where a delegated subtree starts)."""
    mount = mount_point("cgroup2", None)
    own = own_cgroup_path(None)
    if mount is None or own is None:
        raise ConfinementError("no cgroup2 mount or membership")
    return join_mount(mount, own)


def own_v1_group(controller: str) -> Path:
    mount = mount_point("cgroup", controller)
    own = own_cgroup_path(controller)
    if mount is None or own is None:
        raise ConfinementError(f"no cgroup v1 {controller} hierarchy")
    return join_mount(mount, own)


def maybe_v1_group(controller: str) -> Path | None:
    try:
        parent = own_v1_group(controller)
    except ConfinementError:
        return None
    return parent if os.access(parent, os.W_OK) else None


def mount_point(fstype: str, controller: str | None) -> tuple[Path, str] | None:
    """(mount point, root inside the hierarchy) of the cgroup filesystem holding `controller`."""
    text = read_file(_PROC / "self" / "mountinfo") or ""
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] != fstype:
            continue
        if controller is not None and controller not in tail[2].split(","):
            continue
        return Path(fields[4]), fields[3]
    return None


def own_cgroup_path(controller: str | None) -> str | None:
    """Our path in a hierarchy, from /proc/self/cgroup (`0::/x` for v2, `4:memory:/x` for v1)."""
    for line in (read_file(_PROC / "self" / "cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if controller is None and parts[0] == "0" and parts[1] == "":
            return parts[2]
        if controller is not None and controller in parts[1].split(","):
            return parts[2]
    return None


def join_mount(mount: tuple[Path, str], own: str) -> Path:
    point, root = mount
    rel = own
    if root != "/" and (own == root or own.startswith(root + "/")):
        rel = own[len(root) :]
    return point / rel.lstrip("/")


# ---------------------------------------------------------------------------------------------
# Files


def read_file(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def write_file(path: Path, value: str) -> None:
    with path.open("w") as fh:
        fh.write(value)


def read_keyed(path: Path) -> dict[str, int]:
    """`key value` lines (memory.events, memory.oom_control) as a dict."""
    result: dict[str, int] = {}
    for line in (read_file(path) or "").splitlines():
        key, _, value = line.partition(" ")
        number = int_or_none(value)
        if number is not None:
            result[key] = number
    return result


def int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("worker.cgroup_cleanup_failed", path=str(path), error=str(exc))
