"""A preemptible generation stops when asked (the supervisor sends SIGUSR1 to the worker),
also while its prompt is still being evaluated, and what was evaluated stays in the KV cache
for the rerun. A generation that is not preemptible is never stopped. Real worker and engine,
bundled model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.worker.engine import PREFILL_CHUNK, Engine
from gateway.worker.protocol import ChatMessage
from tests.devices import eventually
from tests.worker.conftest import SupervisorFactory, worker_config

pytestmark = pytest.mark.slow

LONG = [
    {"role": "system", "content": "You are a maintenance assistant. Answer briefly."},
    {
        "role": "user",
        "content": "Summarise this manual section. "
        + "The return filter element HF-2231-B is replaced every 2000 operating hours. " * 25,
    },
]


def test_the_engine_stops_between_prompt_chunks_and_keeps_what_it_evaluated(
    generation_gguf: Path, embedding_gguf: Path
) -> None:
    engine = Engine(generation_gguf, embedding_gguf, n_ctx=1024, n_threads=2, flash_attn=True)
    try:
        messages = [ChatMessage(**m) for m in LONG]
        answers: Iterator[bool] = iter([False, False])  # two chunks, then: stop

        stopped = engine.generate(
            messages, max_tokens=50, temperature=0.0, should_stop=lambda: next(answers, True)
        )
        assert stopped.finish_reason == "preempted"
        assert stopped.completion_tokens == 0
        assert stopped.prompt_tokens > 3 * PREFILL_CHUNK
        again = engine.generate(messages, max_tokens=4, temperature=0.0)
        assert again.finish_reason in ("stop", "length")
        assert again.prompt_eval_tokens == again.prompt_tokens - 2 * PREFILL_CHUNK
    finally:
        engine.close()


async def test_the_supervisor_preempts_a_preemptible_generation_only(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor(worker_config(n_ctx=1024))
    await sup.start()
    routine = asyncio.create_task(
        sup.generate(LONG, max_tokens=200, temperature=0.0, preemptible=True)
    )
    await eventually(lambda: sup.current_op == "generate", 30)
    assert sup.preempt() is True
    stopped = await routine
    assert stopped.finish_reason == "preempted"
    assert stopped.completion_tokens < 200

    question = asyncio.create_task(sup.generate(LONG, max_tokens=24, temperature=0.0))
    await eventually(lambda: sup.current_op == "generate", 30)
    assert sup.preempt() is False
    done = await question
    assert done.finish_reason in ("stop", "length")
    assert done.completion_tokens > 0
