"""Which confinement the tests must see on this machine, and the cgroup the cgroup tests use.

A cgroup test cannot run where no cgroup is writable, but a skip there would also hide a
gateway that stopped finding a cgroup it should use. So the machine says what it has:
`EDGE_GATEWAY_EXPECT_CONFINEMENT` (set by `.ci/run` from its own probe of the machine, the
gateway's order: a writable cgroup v2 group with the memory controller, else a writable cgroup v1
memory hierarchy, else RLIMIT_AS). When it is set, the tests assert exactly that path; only
when it is unset may a cgroup test skip, and its skip reason says what goes untested.
"""

from __future__ import annotations

import os
from typing import Literal

import pytest

from gateway.worker.cgroupfs import ConfinementError
from gateway.worker.confinement import Limits, create_confinement

EXPECT_ENV = "EDGE_GATEWAY_EXPECT_CONFINEMENT"
Expected = Literal["cgroup-v2", "cgroup-v1", "rlimit"]
CgroupVersion = Literal["cgroup-v2", "cgroup-v1"]
_VALUES: tuple[Expected, ...] = ("cgroup-v2", "cgroup-v1", "rlimit")


def expected_confinement() -> Expected | None:
    """The confinement this machine must give the worker, or None when nobody said."""
    value = os.environ.get(EXPECT_ENV, "").strip()
    if not value:
        return None
    for known in _VALUES:
        if value == known:
            return known
    raise pytest.UsageError(f"{EXPECT_ENV}={value!r}: expected one of {', '.join(_VALUES)}")


def probe_cgroups() -> tuple[CgroupVersion | None, list[str]]:
    """The cgroup version the gateway can use here (its own code, its order: v2 first), or
    None, with why each version failed."""
    reasons = []
    choices: tuple[CgroupVersion, ...] = ("cgroup-v2", "cgroup-v1")
    for choice in choices:
        try:
            probe = create_confinement(
                Limits(memory_bytes=64 << 20), instance="probe", choice=choice
            )
        except (ConfinementError, OSError) as exc:
            reasons.append(f"{choice}: {exc}")
            continue
        probe.close()
        return choice, reasons
    return None, reasons


def cgroup_under_test() -> CgroupVersion:
    """The cgroup version a cgroup test runs with.

    With `EDGE_GATEWAY_EXPECT_CONFINEMENT` set: exactly that version, or the test fails (the
    gateway no longer finds the cgroup this machine has); `rlimit` there means the machine has
    no cgroup for us, which is asserted, then the cgroup-only test is skipped saying so. Unset:
    the version found, or a skip whose reason says that cgroup confinement went untested.
    """
    expected = expected_confinement()
    found, reasons = probe_cgroups()
    if expected is None:
        if found is None:
            pytest.skip(
                "UNTESTED: cgroup confinement (a regression in it would pass unnoticed): no "
                f"writable cgroup here ({'; '.join(reasons)}) and {EXPECT_ENV} is unset; set it "
                "to cgroup-v2, cgroup-v1 or rlimit (.ci/run does) to turn this skip into an "
                "assertion"
            )
        return found
    if expected == "rlimit":
        assert found is None, (
            f"{EXPECT_ENV}=rlimit, but {found} is writable here: the machine changed, or the "
            "expectation is wrong"
        )
        pytest.skip(
            f"{EXPECT_ENV}=rlimit: no writable cgroup on this machine (asserted: "
            f"{'; '.join(reasons)}); the rlimit path is what the other confinement tests assert "
            "here, cgroup confinement itself cannot run"
        )
    assert found == expected, (
        f"{EXPECT_ENV}={expected}, but the gateway's probe found {found}: {'; '.join(reasons)}"
    )
    return found


def machine_confinement() -> Expected:
    """What the worker must be confined by here: the expectation when set, else what the
    gateway's own probe finds (a cgroup, or `rlimit` where none is writable)."""
    expected = expected_confinement()
    if expected is not None:
        return expected
    found, _ = probe_cgroups()
    return found or "rlimit"


def assert_machine_confinement(reported: str) -> None:
    """`reported` (a worker's health `confinement`, or the mode of its `worker.started` log
    event) is exactly what this machine has: a cgroup machine whose worker fell back to
    `rlimit` fails here."""
    mode = reported.split(":", 1)[0]
    want = machine_confinement()
    assert mode == want, f"worker confined by {reported!r}, this machine has {want}"
