"""Issue 6, items 4 and 5: the model worker over its memory limit, and frozen with SIGSTOP,
with the whole gateway around it (real broker, real worker, its real cgroup or rlimit).

Item 4's allocation is the worker's test-only `alloc` op (enabled by `allow_test_ops`), sent
just before the generation of any question whose text carries the marker: the worker then
dies *during that question*, exactly as if the prompt had pushed it over. Nothing else of the
gateway is replaced.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.app import Gateway
from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.faults.conftest import in_domain, record
from tests.harness import GatewayRunner, terminal

pytestmark = pytest.mark.timeout(600)
MARKER = "[alloc]"
LIMIT_MB = 512


def allocate_before_marked_questions(gw: Gateway) -> None:
    """Wrap the supervisor's generate: a marked question's prompt first allocates past the limit."""
    worker = gw.worker
    assert worker is not None
    real: Callable[..., Awaitable[Any]] = worker.generate

    async def generate(messages: Any, **kw: Any) -> Any:
        if any(MARKER in m["content"] for m in messages):
            await worker.call_test_op("alloc", mb=LIMIT_MB * 2)
        return await real(messages, **kw)

    worker.generate = generate  # type: ignore[method-assign]


async def test_worker_over_memory_limit_then_budget_spent_degrades_not_dies(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    budget = 2
    settings = make_settings(
        mosquitto,
        "worker.max_tokens=8",
        "kb.top_k=1",
        f"worker.memory_limit_mb={LIMIT_MB}",
        f"worker.restart_budget={budget}",
        "worker.restart_window_s=600",
    )
    question = in_domain(1)[0]
    async with (
        GatewayRunner(settings) as gw,
        terminal(mosquitto.port, "t1") as t,
        terminal(mosquitto.port, "hmi", subscribe=("edge/plant1/gateway/gw1/health",)) as hmi,
    ):
        allocate_before_marked_questions(gw)
        assert gw.worker is not None
        first_pid = gw.worker.pid
        confinement = gw.worker.health().confinement
        qid = await t.ask(f"{question} {MARKER}")
        reply = (await t.wait_for(qid, 120)).json
        assert (reply["kind"], reply["code"]) == ("error", "worker_oom"), reply
        assert gw.worker.health().oom_kills == 1
        qid = await t.ask(question)
        reply = (await t.wait_for(qid, 120)).json
        assert reply["kind"] == "answer", reply
        assert reply["fallback"] is False, reply
        assert gw.worker.pid not in (None, first_pid)  # a new worker, the same gateway
        codes = ["worker_oom"]
        # Spend the rest of the budget, and one more death to go past it.
        for _ in range(budget):
            qid = await t.ask(f"{question} {MARKER}")
            codes.append((await t.wait_for(qid, 120)).json["code"])
        await asyncio.sleep(1.0)
        assert gw.worker.degraded
        assert gw.state() == "degraded"
        qid = await t.ask(question)
        degraded_reply = (await t.wait_for(qid, 120)).json
        assert degraded_reply["kind"] == "answer"
        assert degraded_reply["fallback"] is True  # answered, without the model
        hmi.replies.clear()
        states = await hmi.wait_count(1, 10)
        health = states[-1].json
        assert health["state"] == "degraded", health
        restarts, ooms = gw.worker.health().restarts, gw.worker.health().oom_kills
    record(
        f"FIGURES worker over memory limit ({confinement}, {LIMIT_MB} MB): error codes {codes}; "
        f"next question answered by a new worker; worker restarts {restarts}, OOM kills {ooms}; "
        f"budget {budget} spent -> health state {health['state']!r}, question answered with "
        f"fallback={degraded_reply['fallback']}; gateway kept running"
    )
    assert codes[:budget] == ["worker_oom"] * budget
    assert ooms == budget + 1


async def test_sigstopped_worker_times_out_is_replaced_and_the_queue_is_answered(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    timeout_s = 30
    settings = make_settings(
        mosquitto, "worker.max_tokens=8", "kb.top_k=1", f"worker.request_timeout_s={timeout_s}"
    )
    texts = in_domain(4)
    async with GatewayRunner(settings) as gw, terminal(mosquitto.port, "t1") as t:
        assert gw.worker is not None
        assert gw.journal is not None
        frozen = gw.worker.pid
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)
        qids = [await t.ask(text) for text in texts]
        replies = [(await t.wait_for(q, timeout_s * 2 + 120)).json for q in qids]
        restarts = gw.worker.health().restarts
        runs = [gw.journal.model_runs("t1", q) for q in qids]
        new_pid = gw.worker.pid
    outcome = [r.get("code", "answer") for r in replies]
    record(
        f"FIGURES worker SIGSTOP (request timeout {timeout_s} s): replies {outcome}; "
        f"worker restarts {restarts}; model runs {runs}; frozen pid replaced: {new_pid != frozen}"
    )
    assert outcome[0] == "worker_timeout", json.dumps(replies[0])
    assert outcome[1:] == ["answer"] * (len(texts) - 1)
    assert all(not r["fallback"] for r in replies[1:])
    assert restarts == 1
    assert new_pid not in (None, frozen)
