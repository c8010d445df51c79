"""Building the Answer messages every path shares: sources with their quotes, latencies, the
fallback and the re-addressed cached answer."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePath

from gateway.grounding import Quote
from gateway.questions.conversation import Turn
from gateway.rag.search import SearchHit
from models.answer import Answer, Latency, Source, Usage


@dataclass(frozen=True, slots=True)
class QuestionContext:
    question_id: str
    terminal_id: str
    text: str
    received_at: float
    started_at: float
    history: tuple[Turn, ...] = ()
    """The earlier turns of the question's conversation, oldest first (none when asked alone)."""


def _ms(seconds: float) -> float:
    return max(0.0, seconds * 1000.0)


def to_source(hit: SearchHit, quote: Quote | None = None) -> Source:
    return Source(
        document=hit.document[:1024],
        section=hit.section[:256],
        page=hit.page,
        score=max(-1.0, min(1.0, float(hit.similarity))),
        chunk_id=hit.chunk_id,
        quote=quote.text[:1024] if quote is not None else "",
    )


def where(hit: SearchHit) -> str:
    """How an answer names a chunk: file name, then section or page."""
    name = PurePath(hit.document).name
    if hit.section:
        return f"{name}, {hit.section}"
    return f"{name}, page {hit.page}" if hit.page is not None else name


def latency(ctx: QuestionContext, retrieve_s: float, generate_ms: float = 0.0) -> Latency:
    return Latency(
        queue_ms=_ms(ctx.started_at - ctx.received_at),
        retrieve_ms=_ms(retrieve_s),
        generate_ms=generate_ms,
        total_ms=_ms(time.time() - ctx.received_at),
    )


def fallback_answer(ctx: QuestionContext, text: str, *, retrieve_s: float) -> Answer:
    return Answer(
        question_id=ctx.question_id,
        terminal_id=ctx.terminal_id,
        text=text,
        sources=(),
        fallback=True,
        model="",
        usage=Usage(),
        latency=latency(ctx, retrieve_s),
        answered_at=datetime.now(UTC),
    )


def cached_answer(ctx: QuestionContext, stored: Answer, *, retrieve_s: float) -> Answer:
    """A stored answer re-addressed to this question: its text, sources and model, no usage."""
    return stored.model_copy(
        update={
            "question_id": ctx.question_id,
            "terminal_id": ctx.terminal_id,
            "cached": True,
            "usage": Usage(),
            "latency": latency(ctx, retrieve_s),
            "answered_at": datetime.now(UTC),
        }
    )
