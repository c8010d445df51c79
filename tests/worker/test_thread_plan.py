"""Issue 7: the worker never gets more inference threads than the cores it may use."""

from __future__ import annotations

import os

from gateway.worker.process import plan_threads

CORES = len(os.sched_getaffinity(0))


def test_zero_means_every_usable_core() -> None:
    plan = plan_threads(0, 0)
    assert (plan.threads, plan.cores, plan.clamped) == (CORES, CORES, False)


def test_more_threads_than_cores_are_clamped() -> None:
    plan = plan_threads(CORES + 3, 0)
    assert (plan.threads, plan.clamped) == (CORES, True)
    assert plan_threads(1, 0).threads == 1


def test_a_cpu_quota_lowers_the_usable_cores() -> None:
    assert plan_threads(0, 100).threads == 1
    assert plan_threads(0, 150).threads == 1
    plan = plan_threads(2, 100)
    assert (plan.threads, plan.cores, plan.clamped) == (1, 1, True)
    assert plan_threads(0, 100 * (CORES + 4)).threads == CORES
