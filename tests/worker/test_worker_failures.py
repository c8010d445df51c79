"""Crashes, hangs, memory limits and the restart budget, each with its own real worker."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psutil
import pytest

from gateway.errors import (
    WorkerCrashed,
    WorkerOOMKilled,
    WorkerTimeout,
    WorkerUnavailable,
)
from tests.confinement import cgroup_under_test
from tests.worker.conftest import (
    SupervisorFactory,
    cgroup_dirs_named,
    proc_cgroups,
    wait_for_state,
    wait_until,
    worker_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

LONG_ANSWER = [{"role": "user", "content": "Count from 1 to 200, one number per line."}]
SHORT = [{"role": "user", "content": "Say OK."}]


async def test_sigkill_mid_generation_is_a_crash_then_the_next_request_succeeds(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor()
    await sup.start()
    first_pid = sup.pid
    assert first_pid is not None

    def kill_on_first_token(_text: str) -> None:
        os.kill(first_pid, signal.SIGKILL)

    with pytest.raises(WorkerCrashed) as info:
        await sup.generate(
            LONG_ANSWER, max_tokens=300, temperature=0.0, on_token=kill_on_first_token
        )
    assert not isinstance(info.value, WorkerOOMKilled)
    assert "SIGKILL" in str(info.value)
    gen = await sup.generate(SHORT, max_tokens=8, temperature=0.0)
    assert gen.text
    assert sup.pid not in (None, first_pid)
    assert sup.health().restarts == 1
    assert sup.health().oom_kills == 0


async def test_sigstop_times_out_and_the_worker_is_replaced(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor(worker_config(request_timeout_s=1.0))
    await sup.start()
    stopped = sup.pid
    assert stopped is not None
    os.kill(stopped, signal.SIGSTOP)
    with pytest.raises(WorkerTimeout):
        await sup.generate(SHORT, max_tokens=8, temperature=0.0)
    assert not psutil.pid_exists(stopped) or psutil.Process(stopped).status() == "zombie"
    gen = await sup.generate(SHORT, max_tokens=8, temperature=0.0, timeout_s=30.0)
    assert gen.text
    assert sup.pid not in (None, stopped)


async def test_hang_inside_a_request_times_out(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor(worker_config(request_timeout_s=0.5))
    await sup.start()
    with pytest.raises(WorkerTimeout):
        await sup.call_test_op("sleep", s=30)
    assert await sup.call_test_op("sleep", s=0, timeout_s=30.0) == {"slept_s": 0.0}


async def test_crash_while_idle_is_noticed_and_restarted(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor()
    await sup.start()
    pid = sup.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: sup.pid not in (None, pid))
    await wait_for_state(sup, "ready")
    assert sup.health().restarts == 1
    assert await sup.ping() == sup.pid


async def test_cgroup_limit_is_read_back_and_oom_is_classified(
    make_supervisor: SupervisorFactory,
) -> None:
    version = cgroup_under_test()
    sup = make_supervisor(worker_config(memory_limit_mb=256), instance="oomtest")
    await sup.start()
    health = sup.health()
    assert health.confinement == version
    assert health.memory_limit_bytes == 256 << 20
    # The worker really is in the group (it joined it itself before loading the model).
    assert health.pid is not None
    assert any(f"edge-gateway-oomtest-{os.getpid()}-" in g for g in proc_cgroups(health.pid))
    before = health.oom_kills
    with pytest.raises(WorkerOOMKilled):
        await sup.call_test_op("alloc", mb=512)
    assert sup.health().oom_kills == before + 1
    assert await sup.call_test_op("alloc", mb=16) == {"allocated_mb": 16}  # restarted
    assert sup.health().memory_limit_bytes == 256 << 20


async def test_rlimit_fallback_reports_itself_and_classifies_memory_errors(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor(worker_config(memory_limit_mb=2048), confinement="rlimit")
    await sup.start()
    health = sup.health()
    assert health.confinement == "rlimit"
    assert health.memory_limit_bytes == 2048 << 20  # read back from the worker's own limits
    with pytest.raises(WorkerOOMKilled):
        await sup.call_test_op("alloc", mb=4096)
    assert sup.health().oom_kills == 1
    assert (await sup.generate(SHORT, max_tokens=4, temperature=0.0)).completion_tokens >= 1


async def test_spent_restart_budget_degrades_then_fails_fast(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor(worker_config(restart_budget=1, restart_window_s=600))
    await sup.start()
    first = sup.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await wait_until(lambda: sup.pid not in (None, first))
    second = sup.pid
    assert second is not None
    assert sup.state == "ready"
    os.kill(second, signal.SIGKILL)  # the second death within the window
    await wait_for_state(sup, "failed")
    assert sup.degraded
    assert sup.health().state == "failed"
    assert sup.health().pid is None
    with pytest.raises(WorkerUnavailable):
        await sup.generate(SHORT, max_tokens=4, temperature=0.0)
    with pytest.raises(WorkerUnavailable):
        await sup.embed(["x"])


async def test_one_new_attempt_after_the_window(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor(worker_config(restart_budget=0, restart_window_s=0.5))
    await sup.start()
    pid = sup.pid
    assert pid is not None
    with pytest.raises(WorkerCrashed):
        await sup.generate(
            LONG_ANSWER,
            max_tokens=200,
            temperature=0.0,
            on_token=lambda _t: os.kill(pid, signal.SIGKILL),
        )
    assert sup.state == "failed"
    assert sup.degraded
    with pytest.raises(WorkerUnavailable):
        await sup.ping()
    await asyncio.sleep(0.6)  # let the window pass (not an assertion)
    assert await sup.ping() not in (None, pid)
    assert sup.health().state == "ready"
    assert not sup.degraded


async def test_stop_ends_the_worker_and_removes_its_cgroup(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor(instance="stoptest")
    await sup.start()
    pid = sup.pid
    assert pid is not None
    groups = [Path(g).name for g in proc_cgroups(pid) if "edge-gateway-stoptest" in g]
    assert groups
    assert cgroup_dirs_named(groups[0])
    await sup.stop()
    assert sup.state == "stopped"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert not cgroup_dirs_named(groups[0])
    with pytest.raises(WorkerUnavailable):
        await sup.ping()
    await sup.stop()  # idempotent


async def test_test_ops_are_refused_by_a_normal_worker(make_supervisor: SupervisorFactory) -> None:
    sup = make_supervisor(allow_test_ops=False)
    with pytest.raises(PermissionError):
        await sup.call_test_op("alloc", mb=1)
