"""From a question's text to an Answer: retrieve, threshold, fit the context, generate.

I/O is reached only through the two protocols below (the worker client and the knowledge-base
search), so the decision logic is plain and the callers decide where the blocking work runs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from gateway.errors import ContextOverflow
from gateway.logging import get_logger
from gateway.questions.answer_cache import AnswerCache, CacheHit
from gateway.questions.prompt import ContextChunk, build_messages
from gateway.rag.search import Search, SearchHit
from models.answer import Answer, Latency, Source, Usage

log = get_logger(__name__)


class GenerationResult(Protocol):
    @property
    def text(self) -> str: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def prompt_ms(self) -> float: ...
    @property
    def generate_ms(self) -> float: ...
    @property
    def model(self) -> str: ...


class ModelClient(Protocol):
    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def count_tokens(self, messages: Sequence[Mapping[str, str]]) -> int: ...

    async def generate(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        on_token: Callable[[str], None] | None = None,
    ) -> GenerationResult: ...


KbVersion = Callable[[], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class AnswerPolicy:
    """The knobs of answering; reloadable, so kept apart from the machinery."""

    similarity_threshold: float
    fallback_text: str
    n_ctx: int
    max_tokens: int
    temperature: float


@dataclass(frozen=True, slots=True)
class QuestionContext:
    question_id: str
    terminal_id: str
    text: str
    received_at: float
    started_at: float


def _ms(seconds: float) -> float:
    return max(0.0, seconds * 1000.0)


def to_source(hit: SearchHit) -> Source:
    return Source(
        document=hit.document[:1024],
        section=hit.section[:256],
        page=hit.page,
        score=max(-1.0, min(1.0, float(hit.similarity))),
        chunk_id=hit.chunk_id,
    )


def fallback_answer(ctx: QuestionContext, policy: AnswerPolicy, *, retrieve_s: float) -> Answer:
    now = time.time()
    return Answer(
        question_id=ctx.question_id,
        terminal_id=ctx.terminal_id,
        text=policy.fallback_text,
        sources=(),
        fallback=True,
        model="",
        usage=Usage(),
        latency=Latency(
            queue_ms=_ms(ctx.started_at - ctx.received_at),
            retrieve_ms=_ms(retrieve_s),
            generate_ms=0.0,
            total_ms=_ms(now - ctx.received_at),
        ),
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
            "latency": Latency(
                queue_ms=_ms(ctx.started_at - ctx.received_at),
                retrieve_ms=_ms(retrieve_s),
                generate_ms=0.0,
                total_ms=_ms(time.time() - ctx.received_at),
            ),
            "answered_at": datetime.now(UTC),
        }
    )


class Answerer:
    """Answers one question at a time; the scheduler decides which and when.

    With a cache (and the knowledge base's version to key it on), a question close enough to
    one answered before is answered after retrieval without the model
    (gateway/questions/answer_cache.py).
    """

    def __init__(
        self,
        model: ModelClient,
        search: Search,
        policy: AnswerPolicy,
        *,
        cache: AnswerCache | None = None,
        kb_version: KbVersion | None = None,
    ) -> None:
        if (cache is None) != (kb_version is None):
            raise ValueError("an answer cache needs the knowledge base version, and only it")
        self._model = model
        self._search = search
        self.policy = policy
        self.cache = cache
        self._kb_version = kb_version

    async def answer(
        self,
        ctx: QuestionContext,
        *,
        on_token: Callable[[str], None] | None = None,
        before_generate: Callable[[], Awaitable[None]] | None = None,
    ) -> Answer:
        policy = self.policy
        t0 = time.perf_counter()
        kb_version = await self._kb_version() if self._kb_version is not None else 0
        if self.cache is not None:
            hit = self.cache.lookup_exact(ctx.text, kb_version=kb_version, now=time.monotonic())
            if hit is not None:
                return self._from_cache(ctx, hit, retrieve_s=time.perf_counter() - t0)
        (vector,) = await self._model.embed([ctx.text])
        hits = list(await self._search(ctx.text, vector))
        retrieve_s = time.perf_counter() - t0
        best = max((h.similarity for h in hits), default=-1.0)
        if best < policy.similarity_threshold:
            log.info(
                "answer.fallback",
                question_id=ctx.question_id,
                terminal_id=ctx.terminal_id,
                best_similarity=round(best, 4),
                threshold=policy.similarity_threshold,
            )
            return fallback_answer(ctx, policy, retrieve_s=retrieve_s)

        chunk_ids = [h.chunk_id for h in hits]
        if self.cache is not None:
            hit = self.cache.lookup(
                ctx.text, vector, chunk_ids, kb_version=kb_version, now=time.monotonic()
            )
            if hit is not None:
                return self._from_cache(ctx, hit, retrieve_s=retrieve_s)

        used, messages = await self._fit_context(ctx, hits)
        if before_generate is not None:
            await before_generate()
        generation = await self._model.generate(
            messages,
            max_tokens=policy.max_tokens,
            temperature=policy.temperature,
            on_token=on_token,
        )
        now = time.time()
        text = generation.text.strip()[:32_768]
        answer = Answer(
            question_id=ctx.question_id,
            terminal_id=ctx.terminal_id,
            text=text or policy.fallback_text,
            sources=tuple(to_source(h) for h in used),
            fallback=False,
            model=generation.model[:256],
            usage=Usage(
                prompt_tokens=generation.prompt_tokens,
                completion_tokens=generation.completion_tokens,
            ),
            latency=Latency(
                queue_ms=_ms(ctx.started_at - ctx.received_at),
                retrieve_ms=_ms(retrieve_s),
                generate_ms=generation.prompt_ms + generation.generate_ms,
                total_ms=_ms(now - ctx.received_at),
            ),
            answered_at=datetime.now(UTC),
        )
        if self.cache is not None and text:
            # An empty generation was replaced by the fallback text: not worth keeping.
            self.cache.store(
                ctx.text, vector, chunk_ids, answer, kb_version=kb_version, now=time.monotonic()
            )
        return answer

    def _from_cache(self, ctx: QuestionContext, hit: CacheHit, *, retrieve_s: float) -> Answer:
        log.info(
            "answer.cache_hit",
            question_id=ctx.question_id,
            terminal_id=ctx.terminal_id,
            original_question_id=hit.answer.question_id,
            similarity=round(hit.similarity, 4),
            age_s=round(hit.age_s, 1),
        )
        return cached_answer(ctx, hit.answer, retrieve_s=retrieve_s)

    async def _fit_context(
        self, ctx: QuestionContext, hits: Sequence[SearchHit]
    ) -> tuple[list[SearchHit], list[dict[str, str]]]:
        """Drop the weakest chunks until prompt + answer fit the window; say so when it happens."""
        budget = self.policy.n_ctx - self.policy.max_tokens
        used = list(hits)
        while True:
            messages = build_messages(ctx.text, [_context(i, h) for i, h in enumerate(used, 1)])
            tokens = await self._model.count_tokens(messages)
            if tokens <= budget:
                break
            if not used:
                raise ContextOverflow(
                    f"the question alone needs {tokens} prompt tokens; the budget is {budget}",
                    prompt_tokens=tokens,
                    limit=budget,
                    question_id=ctx.question_id,
                )
            used.pop()
        if len(used) < len(hits):
            log.info(
                "answer.context_trimmed",
                question_id=ctx.question_id,
                terminal_id=ctx.terminal_id,
                kept=len(used),
                dropped=len(hits) - len(used),
                prompt_tokens=tokens,
                budget=budget,
            )
        return used, messages


def _context(number: int, hit: SearchHit) -> ContextChunk:
    return ContextChunk(
        number=number, document=hit.document, section=hit.section, page=hit.page, text=hit.text
    )
