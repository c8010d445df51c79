"""Running a question set in process: the configured knowledge base, the configured model in its
confined worker, the same Answerer the daemon uses, one question at a time.

What it measures is what a terminal would get from this box with this configuration, minus the
bus round trip (under a millisecond on either bus; docs/performance.md). The cache is off: a
set that repeats a question must not score the repeat for free.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence

from gateway.config import Settings
from gateway.evaluation.cases import EvalCase
from gateway.evaluation.scoring import CaseResult, Observation, score
from gateway.executor import SerialExecutor
from gateway.questions.answering import Answerer, AnswerPolicy
from gateway.questions.answers import QuestionContext
from gateway.rag.live import LiveKnowledgeBase
from gateway.rag.opening import generation_model_path, open_knowledge_base
from gateway.rag.search import SearchHit
from gateway.worker.supervisor import WorkerSupervisor
from models.answer import Answer, AnswerMode, Source

OnResult = Callable[[int, CaseResult, Answer], None]


async def run_cases(
    settings: Settings,
    cases: Sequence[EvalCase],
    *,
    modes: Sequence[AnswerMode],
    on_result: OnResult | None = None,
) -> dict[AnswerMode, list[tuple[CaseResult, Answer]]]:
    """Every case under every mode, with one worker and one knowledge base for all of them."""
    io = SerialExecutor("eval-kb")
    kb_file, embedding_model = await io.run(open_knowledge_base, settings)
    chunks = await io.run(kb_file.chunk_count)
    kb = LiveKnowledgeBase(kb_file, io, top_k=settings.kb.top_k, chunks=chunks)
    await io.run(kb_file.warm)
    worker = WorkerSupervisor(
        settings.worker,
        generation_model=generation_model_path(settings),
        embedding_model=embedding_model,
        instance=f"{settings.instance}-eval",
    )
    results: dict[AnswerMode, list[tuple[CaseResult, Answer]]] = {}
    try:
        await worker.start()
        base = AnswerPolicy.from_settings(settings)
        for mode in modes:
            answerer = Answerer(worker, kb.search, dataclasses.replace(base, mode=mode))
            rows = results[mode] = []
            for index, case in enumerate(cases, 1):
                result, answer = await answer_case(answerer, case)
                rows.append((result, answer))
                if on_result is not None:
                    on_result(index, result, answer)
    finally:
        await worker.stop()
        await kb.close()
        io.shutdown()
    return results


async def answer_case(answerer: Answerer, case: EvalCase) -> tuple[CaseResult, Answer]:
    seen: list[str] = []
    quoted: list[float] = []

    def keep(hits: Sequence[SearchHit]) -> None:
        seen.extend(h.text for h in hits)

    def quote(_source: Source) -> None:
        quoted.append((time.perf_counter() - started) * 1000)

    now = time.time()
    ctx = QuestionContext(
        question_id=_question_id(case.id),
        terminal_id="eval",
        text=case.question,
        received_at=now,
        started_at=now,
    )
    started = time.perf_counter()
    answer = await answerer.answer(ctx, on_hits=keep, on_quote=quote)
    latency_ms = (time.perf_counter() - started) * 1000
    observed = Observation(case, answer, latency_ms, tuple(seen), quoted[0] if quoted else None)
    return score(observed), answer


def _question_id(case_id: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._:-" else "-" for c in case_id)[:120]
    return cleaned if cleaned[:1].isalnum() else f"q{cleaned}"[:120]


def run(
    settings: Settings,
    cases: Sequence[EvalCase],
    *,
    modes: Sequence[AnswerMode],
    on_result: OnResult | None = None,
) -> dict[AnswerMode, list[tuple[CaseResult, Answer]]]:
    return asyncio.run(run_cases(settings, cases, modes=modes, on_result=on_result))
