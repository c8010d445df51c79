"""The worker's calls against the real bundled models, sharing one worker per module."""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from gateway.errors import ContextOverflow
from gateway.worker.supervisor import WorkerSupervisor
from tests.confinement import assert_machine_confinement
from tests.worker.conftest import worker_config

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

N_CTX = 1024
QUESTION = [
    {"role": "system", "content": "You are a maintenance assistant. Answer briefly."},
    {"role": "user", "content": "What does a pressure relief valve do?"},
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(generation_gguf: Path, embedding_gguf: Path) -> AsyncIterator[WorkerSupervisor]:
    sup = WorkerSupervisor(
        worker_config(n_ctx=N_CTX),
        generation_model=generation_gguf,
        embedding_model=embedding_gguf,
        instance="calls",
    )
    await sup.start()
    yield sup
    await sup.stop()


async def test_generates_an_answer_with_token_counts(worker: WorkerSupervisor) -> None:
    gen = await worker.generate(QUESTION, max_tokens=32, temperature=0.0)
    assert gen.text.strip()
    assert gen.prompt_tokens > 10
    assert 1 <= gen.completion_tokens <= 32
    assert gen.prompt_ms > 0
    assert gen.generate_ms >= 0
    assert gen.model == "SmolLM2-135M-Instruct.Q4_1"


async def test_stream_tokens_concatenate_to_the_final_text(worker: WorkerSupervisor) -> None:
    pieces: list[str] = []
    gen = await worker.generate(QUESTION, max_tokens=48, temperature=0.0, on_token=pieces.append)
    assert len(pieces) > 1
    assert "".join(pieces) == gen.text


async def test_stop_string_ends_generation_and_is_not_returned(worker: WorkerSupervisor) -> None:
    messages = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    full = await worker.generate(messages, max_tokens=64, temperature=0.0)
    assert "5" in full.text
    pieces: list[str] = []
    cut = await worker.generate(
        messages, max_tokens=64, temperature=0.0, stop=["5"], on_token=pieces.append
    )
    assert "5" not in cut.text
    assert full.text.startswith(cut.text)
    assert "".join(pieces) == cut.text


async def test_count_tokens_equals_prompt_tokens_of_generate(worker: WorkerSupervisor) -> None:
    for messages in (QUESTION, QUESTION[1:], [{"role": "user", "content": "Ünïcödé ✓ 压力"}]):
        counted = await worker.count_tokens(messages)
        gen = await worker.generate(messages, max_tokens=4, temperature=0.0)
        assert counted == gen.prompt_tokens


async def test_embed_returns_unit_vectors_of_the_model_dimension(
    worker: WorkerSupervisor,
) -> None:
    texts = ["hydraulic pump pressure drop", "pump loses pressure", "cafeteria opening hours"]
    vectors = await worker.embed(texts)
    assert len(vectors) == 3
    assert all(len(v) == 384 for v in vectors)
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return math.fsum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    assert await worker.embed([]) == []


async def test_embed_batches_larger_than_one_request(worker: WorkerSupervisor) -> None:
    texts = [f"alarm code E{i:03d}" for i in range(150)]  # > embed_batch (64)
    vectors = await worker.embed(texts)
    assert len(vectors) == 150
    assert vectors[0] != vectors[1]


async def test_context_overflow_is_refused_never_truncated(worker: WorkerSupervisor) -> None:
    long_question = [{"role": "user", "content": "pressure valve " * 800}]
    with pytest.raises(ContextOverflow) as info:
        await worker.generate(long_question, max_tokens=16, temperature=0.0)
    assert info.value.limit == N_CTX
    assert info.value.prompt_tokens == await worker.count_tokens(long_question)
    # prompt fits, but not with max_tokens on top
    prompt = await worker.count_tokens(QUESTION)
    with pytest.raises(ContextOverflow):
        await worker.generate(QUESTION, max_tokens=N_CTX - prompt + 1, temperature=0.0)
    exact = await worker.generate(QUESTION, max_tokens=N_CTX - prompt, temperature=0.0)
    assert exact.completion_tokens >= 1


async def test_health_reports_the_live_worker(worker: WorkerSupervisor) -> None:
    health = worker.health()
    assert health.state == "ready"
    assert health.pid == await worker.ping()
    assert health.pid != os.getpid()
    assert health.rss_bytes is not None
    assert health.rss_bytes > 50 << 20
    assert_machine_confinement(health.confinement)
    assert health.memory_limit_bytes == 1024 << 20
    assert health.restarts == 0
    assert health.model == "SmolLM2-135M-Instruct.Q4_1"


async def test_test_ops_need_allow_test_ops(worker: WorkerSupervisor) -> None:
    with pytest.raises(PermissionError):
        await worker.call_test_op("sleep", s=0)


async def test_prefix_reuse_evaluates_only_the_new_tail(worker: WorkerSupervisor) -> None:
    await worker.generate(QUESTION, max_tokens=4, temperature=0.0)
    other = [QUESTION[0], {"role": "user", "content": "What does a check valve do?"}]
    gen = await worker.generate(other, max_tokens=4, temperature=0.0)
    assert gen.prompt_eval_tokens is not None
    assert gen.prompt_eval_tokens < gen.prompt_tokens  # the system prompt was not evaluated again
