"""Prompt prefix reuse on vs off: prompt-processing time of the same RAG prompts (issue 7).

The worker's own Engine, in this process, once with `prefix_reuse` (llama.cpp keeps the KV cache
of the previous prompt; only the tokens after the common prefix are evaluated) and once without
(the KV cache is dropped before each prompt). One completion token each: this measures prompt
processing. Each prompt follows a different one, as questions come in, so what is reused is the
shared head: the system prompt and the start of the user message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.worker.engine import Engine
from gateway.worker.protocol import ChatMessage
from tests.bench.stats import Summary, ratio


def _measure(engine: Engine, prompts: list[list[ChatMessage]]) -> tuple[list[float], list[int]]:
    times, evaluated = [], []
    for messages in prompts:
        result = engine.generate(messages, max_tokens=1, temperature=0.0)
        times.append(result.prompt_ms / 1000)
        evaluated.append(result.prompt_eval_tokens or result.prompt_tokens)
    return times, evaluated


def run(
    prompts: list[list[dict[str, str]]],
    *,
    model: Path,
    embedding_model: Path,
    n_ctx: int,
    n_threads: int,
    flash_attn: bool,
) -> dict[str, Any]:
    chats = [[ChatMessage(role=m["role"], content=m["content"]) for m in p] for p in prompts]
    out: dict[str, Any] = {"prompts": len(chats)}
    for reuse in (False, True):
        engine = Engine(
            model,
            embedding_model,
            n_ctx=n_ctx,
            n_threads=n_threads,
            flash_attn=flash_attn,
            prefix_reuse=reuse,
        )
        try:
            engine.generate(chats[-1], max_tokens=1, temperature=0.0)  # warm up
            times, evaluated = _measure(engine, chats)
            tokens = [len(engine.prompt_tokens(c)) for c in chats]
        finally:
            engine.close()
        key = "on" if reuse else "off"
        out[key] = Summary.of(times)
        out[f"{key}_evaluated"] = sum(evaluated) / len(evaluated)
        out["prompt_tokens"] = sum(tokens) / len(tokens)
        out[f"{key}_raw"] = times
    out["ratio_p50"] = ratio(out["on"].p50_ms, out["off"].p50_ms)
    return out


def report_lines(r: dict[str, Any]) -> list[str]:
    return [
        "## Prompt prefix reuse: on vs off",
        "",
        f"{r['prompts']} RAG prompts of {r['prompt_tokens']:.0f} tokens on average, in the "
        "worker's Engine (`worker.prefix_reuse`), each after a different one; prompt-processing "
        "time is the time to the first generated token.",
        "",
        "| prefix reuse | prompt ms p50 / p95 | tokens evaluated per prompt |",
        "|---|---|---|",
        f"| off | {r['off'].p50_ms:.1f} / {r['off'].p95_ms:.1f} | {r['off_evaluated']:.0f} |",
        f"| on | {r['on'].p50_ms:.1f} / {r['on'].p95_ms:.1f} | {r['on_evaluated']:.0f} |",
        f"| **ratio on / off (p50)** | **{r['ratio_p50']:.3f}** | |",
        "",
    ]
