"""Issue 7: `worker.prefix_reuse = false` evaluates every prompt from its first token (the
baseline `make bench` compares prefix reuse against)."""

from __future__ import annotations

import pytest

from tests.worker.conftest import SupervisorFactory, worker_config

pytestmark = pytest.mark.slow

SYSTEM = {"role": "system", "content": "You are a maintenance assistant. Answer briefly."}


async def test_without_prefix_reuse_every_prompt_is_evaluated_whole(
    make_supervisor: SupervisorFactory,
) -> None:
    sup = make_supervisor(worker_config(n_ctx=1024, prefix_reuse=False))
    await sup.start()
    for question in ("What does a relief valve do?", "What does a check valve do?"):
        messages = [SYSTEM, {"role": "user", "content": question}]
        gen = await sup.generate(messages, max_tokens=4, temperature=0.0)
        assert gen.prompt_eval_tokens == gen.prompt_tokens
