"""`make bench`, section "quality": every answer mode side by side on two document sets, scored
by `edge-gateway eval`'s own code (gateway/evaluation), in one run.

- demo: configs/demo-kb with demo_questions.jsonl;
- reference: tests/bench/quality/docs (man pages from Debian packages, written by nobody on the
  team) with questions.jsonl.

Modes: extractive, checked, generative, and as the baseline generative with whole chunks in the
prompt (the path before quotes and checks: prompt_budget_tokens large enough for every
sentence of every retrieved chunk). Each set is ingested into a fresh knowledge base with the
configured chunking, so the figures also measure ingest and retrieval as a plant gets them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.config import Settings
from gateway.evaluation.cases import load_cases
from gateway.evaluation.report import TOTAL_ROWS
from gateway.evaluation.runner import answer_case
from gateway.evaluation.scoring import CaseResult, Totals, totals
from gateway.executor import SerialExecutor
from gateway.questions.answering import Answerer, AnswerPolicy
from gateway.rag.embedder import LlamaEmbedder
from gateway.rag.ingest import ingest_paths
from gateway.rag.live import LiveKnowledgeBase
from gateway.rag.opening import generation_model_path, open_knowledge_base
from gateway.worker.supervisor import WorkerSupervisor

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SETS = {
    "demo": (REPO / "configs" / "demo-kb", HERE / "demo_questions.jsonl"),
    "reference": (HERE / "docs", HERE / "questions.jsonl"),
}
WHOLE_CHUNKS = "generative, whole chunks (before)"
MODES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("extractive", "extractive", {}),
    ("checked", "checked", {}),
    ("generative", "generative", {}),
    (WHOLE_CHUNKS, "generative", {"prompt_budget_tokens": 100_000}),
)


def ingest(settings: Settings, docs: Path) -> None:
    kb, embedding_model = open_knowledge_base(settings)
    try:
        with LlamaEmbedder(embedding_model, n_threads=1) as embedder:
            report = ingest_paths(
                kb,
                embedder,
                [docs],
                chunk_chars=settings.kb.chunk_chars,
                overlap=settings.kb.chunk_overlap_chars,
                progress=False,
            )
        if not report.ok:
            raise RuntimeError(f"ingest of {docs} failed: {report.summary()}")
    finally:
        kb.close()


@contextlib.asynccontextmanager
async def worker_and_kb(
    settings: Settings, instance: str
) -> AsyncIterator[tuple[WorkerSupervisor, LiveKnowledgeBase]]:
    """The configured knowledge base and a started worker, as the daemon has them."""
    io = SerialExecutor(instance)
    kb_file, embedding_model = await io.run(open_knowledge_base, settings)
    kb = LiveKnowledgeBase(kb_file, io, top_k=settings.kb.top_k, chunks=0)
    await io.run(kb_file.warm)
    worker = WorkerSupervisor(
        settings.worker,
        generation_model=generation_model_path(settings),
        embedding_model=embedding_model,
        instance=instance,
    )
    try:
        await worker.start()
        yield worker, kb
    finally:
        await worker.stop()
        await kb.close()
        io.shutdown()


async def run_set(settings: Settings, questions: Path) -> dict[str, list[CaseResult]]:
    cases = load_cases(questions)
    results: dict[str, list[CaseResult]] = {}
    async with worker_and_kb(settings, "bench-quality") as (worker, kb):
        base = AnswerPolicy.from_settings(settings)
        for label, mode, overrides in MODES:
            policy = dataclasses.replace(base, mode=mode, **overrides)
            answerer = Answerer(worker, kb.search, policy)
            started = time.monotonic()
            results[label] = [(await answer_case(answerer, c))[0] for c in cases]
            print(
                f"  {questions.name} {label}: {len(cases)} questions in "
                f"{time.monotonic() - started:.0f} s",
                flush=True,
            )
    return results


def run(tmp: Path, cache: Path) -> dict[str, dict[str, Totals]]:
    out: dict[str, dict[str, Totals]] = {}
    for name, (docs, questions) in SETS.items():
        settings = Settings(data_dir=tmp / name, cache_dir=cache)
        ingest(settings, docs)
        results = asyncio.run(run_set(settings, questions))
        out[name] = {label: totals(rows) for label, rows in results.items()}
    return out


def report_lines(result: dict[str, dict[str, Totals]], default_mode: str) -> list[str]:
    lines = [
        "## Quality: answer modes side by side",
        "",
        "Scored by `edge-gateway eval` (gateway/evaluation): a key fact counts when any of its "
        "listed variants occurs (case-insensitive); counts are over in-domain questions, "
        "answers with an unsupported statement or a loop over the answers that were not "
        "fallbacks. Question sets and documents: tests/bench/quality/README.md. The default "
        f"mode is **{default_mode}**.",
        "",
    ]
    for name, by_mode in result.items():
        labels = list(by_mode)
        first = next(iter(by_mode.values()))
        lines += [
            f"### {name} ({first.in_domain} in-domain, {first.off_topic} off-topic questions)",
            "",
            "| | " + " | ".join(labels) + " |",
            "|---" * (len(labels) + 1) + "|",
        ]
        for label, attr in TOTAL_ROWS:
            lines.append(
                f"| {label} | " + " | ".join(str(getattr(by_mode[m], attr)) for m in labels) + " |"
            )
        lines.append(
            "| latency p50 / p95 ms | "
            + " | ".join(
                f"{by_mode[m].latency_p50_ms:.0f} / {by_mode[m].latency_p95_ms:.0f}" for m in labels
            )
            + " |"
        )
        lines.append(
            "| first partial (best quote) p50 ms | "
            + " | ".join(f"{by_mode[m].quote_p50_ms:.0f}" for m in labels)
            + " |"
        )
        lines.append(
            "| first partial / complete answer p50 | "
            + " | ".join(f"{by_mode[m].quote_to_total_p50:.2f}" for m in labels)
            + " |"
        )
        lines.append(
            "| prompt tokens p50 | "
            + " | ".join(f"{by_mode[m].prompt_tokens_p50:.0f}" for m in labels)
            + " |"
        )
        lines.append("")
    return lines
