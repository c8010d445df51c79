"""From a question's text to an Answer: retrieve, threshold, quote, then (by mode) generate and
check.

The manual's own lines come first: every source carries its best quote, chosen with the
embedding model already loaded plus keyword and identifier overlap, and a streaming terminal
gets the best one before any model token. The answer text is then, by `mode`:
- extractive: the best quotes themselves, no model call;
- generative: the model's text from a prompt of the best sentences, cut at the first repeat;
- checked: the same, keeping only sentences the excerpts support; if none passes, the
  extractive text (`check.replaced`).

I/O is reached only through the two protocols below (the worker client and the knowledge-base
search), so the decision logic is plain and the callers decide where the blocking work runs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from gateway.config import Settings
from gateway.errors import ContextOverflow
from gateway.grounding import DEFAULT_SUPPORT_THRESHOLD, Quote, extractive_answer
from gateway.grounding.answer_type import unknown_codes, unknown_names
from gateway.logging import get_logger
from gateway.questions.answer_cache import AnswerCache, CacheHit
from gateway.questions.answers import (
    QuestionContext,
    cached_answer,
    fallback_answer,
    latency,
    to_source,
    where,
)
from gateway.questions.composing import (
    SentenceGate,
    candidate_texts,
    choose_quotes,
    embedding_plan,
    prompt_excerpts,
    quote_order,
    rank_all,
    sentence_affinities,
)
from gateway.questions.conversation import follow_up_query, prior_chunks
from gateway.questions.prompt import ContextChunk, EarlierTurn, build_messages
from gateway.rag.search import Search, SearchHit
from models.answer import Answer, AnswerCheck, AnswerMode, Source, Usage

log = get_logger(__name__)

EXTRACTIVE_MAX_CHARS = 800
"""An extractive answer's length: three short quotes, or two long ones, on a handheld screen."""


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
    @property
    def finish_reason(self) -> str: ...


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
        repeat_penalty: float = 1.0,
        stop_on_loop: bool = False,
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
    mode: AnswerMode = "extractive"
    quotes: int = 2
    quote_max_chars: int = 400
    prompt_budget_tokens: int = 320
    support_threshold: float = DEFAULT_SUPPORT_THRESHOLD
    repeat_penalty: float = 1.1
    weak_similarity: float = 0.45

    @classmethod
    def from_settings(cls, s: Settings) -> AnswerPolicy:
        return cls(
            similarity_threshold=s.kb.similarity_threshold,
            fallback_text=s.kb.fallback_text,
            n_ctx=s.worker.n_ctx,
            max_tokens=s.worker.max_tokens,
            temperature=s.worker.temperature,
            mode=s.answer.mode,
            quotes=s.answer.quotes,
            quote_max_chars=s.answer.quote_max_chars,
            prompt_budget_tokens=s.answer.prompt_budget_tokens,
            support_threshold=s.answer.support_threshold,
            repeat_penalty=s.answer.repeat_penalty,
            weak_similarity=s.kb.weak_similarity,
        )


@dataclass(frozen=True, slots=True)
class _Retrieved:
    hits: Sequence[SearchHit]
    texts: Sequence[str]
    similarities: list[list[float]] | None
    sources: tuple[Source, ...]
    extractive: str
    retrieve_s: float


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
        on_quote: Callable[[Source], None] | None = None,
        before_generate: Callable[[], Awaitable[None]] | None = None,
        on_hits: Callable[[Sequence[SearchHit]], None] | None = None,
    ) -> Answer:
        """`on_quote` gets the best quote's source before any model token; `on_token` only
        text that may be published (see SentenceGate); `on_hits` every retrieved chunk."""
        policy = self.policy
        t0 = time.perf_counter()
        kb_version = await self._kb_version() if self._kb_version is not None else 0
        # A follow-up is answered in its conversation's context, which no cached answer shares:
        # the cache neither answers it nor keeps its answer.
        cache = self.cache if not ctx.history else None
        if cache is not None:
            hit = cache.lookup_exact(ctx.text, kb_version=kb_version, now=time.monotonic())
            if hit is not None:
                return self._from_cache(ctx, hit, retrieve_s=time.perf_counter() - t0)
        query = follow_up_query(ctx.text, ctx.history)
        (vector,) = await self._model.embed([query])
        hits = list(await self._search(query, vector, prefer=prior_chunks(ctx.history)))
        if on_hits is not None:
            on_hits(hits)
        best = max((h.similarity for h in hits), default=-1.0)
        if best < policy.similarity_threshold:
            log.info(
                "answer.fallback",
                question_id=ctx.question_id,
                terminal_id=ctx.terminal_id,
                best_similarity=round(best, 4),
                threshold=policy.similarity_threshold,
            )
            return fallback_answer(ctx, policy.fallback_text, retrieve_s=time.perf_counter() - t0)
        seen = [f"{h.document}\n{h.section}\n{h.text}" for h in hits]
        unknown = unknown_codes(query, seen)
        if best < policy.weak_similarity:
            unknown += unknown_names(query, seen)
        if unknown:
            log.info(
                "answer.fallback",
                question_id=ctx.question_id,
                terminal_id=ctx.terminal_id,
                best_similarity=round(best, 4),
                unknown_codes=unknown,
            )
            return fallback_answer(ctx, policy.fallback_text, retrieve_s=time.perf_counter() - t0)

        chunk_ids = [h.chunk_id for h in hits]
        if cache is not None:
            hit = cache.lookup(
                ctx.text, vector, chunk_ids, kb_version=kb_version, now=time.monotonic()
            )
            if hit is not None:
                return self._from_cache(ctx, hit, retrieve_s=time.perf_counter() - t0)

        texts = [h.text for h in hits]
        similarities = await self._sentence_similarities(query, vector, texts)
        quotes = choose_quotes(query, texts, similarities, max_chars=policy.quote_max_chars)
        sources = tuple(to_source(h, q) for h, q in zip(hits, quotes, strict=True))
        retrieve_s = time.perf_counter() - t0
        ranked_quotes = quote_order(query, [h.similarity for h in hits], quotes)
        if on_quote is not None and ranked_quotes:
            on_quote(sources[ranked_quotes[0]])
        extractive = self._extractive(hits, quotes, ranked_quotes)
        if policy.mode == "extractive":
            answer = Answer(
                question_id=ctx.question_id,
                terminal_id=ctx.terminal_id,
                text=extractive,
                sources=sources,
                fallback=False,
                model="",
                latency=latency(ctx, retrieve_s),
                answered_at=datetime.now(UTC),
                grounded=True,
                check=AnswerCheck(mode="extractive"),
            )
        else:
            found = _Retrieved(hits, texts, similarities, sources, extractive, retrieve_s)
            answer = await self._generated(
                ctx, found, on_token=on_token, before_generate=before_generate
            )
        if cache is not None:
            cache.store(
                ctx.text, vector, chunk_ids, answer, kb_version=kb_version, now=time.monotonic()
            )
        return answer

    async def _generated(
        self,
        ctx: QuestionContext,
        found: _Retrieved,
        *,
        on_token: Callable[[str], None] | None,
        before_generate: Callable[[], Awaitable[None]] | None,
    ) -> Answer:
        policy = self.policy
        hits, texts, similarities = found.hits, found.texts, found.similarities
        sources, extractive, retrieve_s = found.sources, found.extractive, found.retrieve_s
        ranked = rank_all(ctx.text, texts, similarities)
        excerpts = prompt_excerpts(ranked, len(hits), budget_tokens=policy.prompt_budget_tokens)
        chunks = [
            ContextChunk(
                number=i + 1, document=h.document, section=h.section, page=h.page, text=text
            )
            for i, (h, text) in enumerate(zip(hits, excerpts, strict=True))
            if text
        ]
        used, messages = await self._fit_context(ctx, chunks)
        if before_generate is not None:
            await before_generate()
        gate = SentenceGate(
            excerpts=[c.text for c in used],
            checked=policy.mode == "checked",
            support_threshold=policy.support_threshold,
            emit=on_token,
        )
        generation = await self._model.generate(
            messages,
            max_tokens=policy.max_tokens,
            temperature=policy.temperature,
            on_token=gate.feed,
            repeat_penalty=policy.repeat_penalty,
            stop_on_loop=True,
        )
        gate.finish()
        text = gate.text
        replaced = not text or (policy.mode == "checked" and gate.supported_count == 0)
        if replaced:
            text = extractive
        stopped = gate.stopped_loop or generation.finish_reason == "loop"
        unsupported = tuple(u.sentence[:1024] for u in gate.unsupported[:32])
        if stopped or unsupported or replaced:
            log.info(
                "answer.checked",
                question_id=ctx.question_id,
                mode=policy.mode,
                unsupported=len(gate.unsupported),
                replaced=replaced,
                loop_stopped=stopped,
            )
        return Answer(
            question_id=ctx.question_id,
            terminal_id=ctx.terminal_id,
            text=text[:32_768],
            sources=sources,
            fallback=False,
            model=generation.model[:256],
            usage=Usage(
                prompt_tokens=generation.prompt_tokens,
                completion_tokens=generation.completion_tokens,
            ),
            latency=latency(ctx, retrieve_s, generation.prompt_ms + generation.generate_ms),
            answered_at=datetime.now(UTC),
            grounded=policy.mode == "checked" or replaced or not unsupported,
            check=AnswerCheck(
                mode=policy.mode,
                unsupported=unsupported,
                replaced=replaced,
                stopped="loop" if stopped else None,
            ),
        )

    async def _sentence_similarities(
        self, question: str, vector: Sequence[float], texts: Sequence[str]
    ) -> list[list[float]] | None:
        """Affinity of every quotable sentence to the question (cosine plus the answer-kind
        bonus), with one embedding call for all of them."""
        candidates = candidate_texts(texts)
        plan = embedding_plan(question, texts)
        flat = [candidates[i][j] for i, chosen in enumerate(plan) for j in chosen]
        if not flat:
            return None
        vectors = np.asarray(await self._model.embed(flat), dtype=np.float64)
        scores = iter((vectors @ np.asarray(vector, dtype=np.float64)).tolist())
        cosines = [[0.0] * len(group) for group in candidates]
        for i, chosen in enumerate(plan):
            for j in chosen:
                cosines[i][j] = float(next(scores))
        return sentence_affinities(question, candidates, cosines)

    def _extractive(
        self, hits: Sequence[SearchHit], quotes: Sequence[Quote | None], order: Sequence[int]
    ) -> str:
        numbered = [(i + 1, where(hits[i]), q) for i in order if (q := quotes[i])]
        return extractive_answer(
            numbered, max_quotes=self.policy.quotes, max_chars=EXTRACTIVE_MAX_CHARS
        ) or (self.policy.fallback_text)

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
        self, ctx: QuestionContext, chunks: Sequence[ContextChunk]
    ) -> tuple[list[ContextChunk], list[dict[str, str]]]:
        """Drop the weakest excerpts until prompt + answer fit the window; say so when it does."""
        budget = self.policy.n_ctx - self.policy.max_tokens
        used = list(chunks)
        turns = [EarlierTurn(t.question, t.answer) for t in ctx.history]
        while True:
            messages = build_messages(ctx.text, used, turns)
            tokens = await self._model.count_tokens(messages)
            if tokens <= budget:
                break
            if turns:  # the conversation gives way first, oldest whole turn first
                turns.pop(0)
                continue
            if not used:
                raise ContextOverflow(
                    f"the question alone needs {tokens} prompt tokens; the budget is {budget}",
                    prompt_tokens=tokens,
                    limit=budget,
                    question_id=ctx.question_id,
                )
            used.pop()
        if len(used) < len(chunks) or len(turns) < len(ctx.history):
            log.info(
                "answer.context_trimmed",
                question_id=ctx.question_id,
                terminal_id=ctx.terminal_id,
                kept=len(used),
                dropped=len(chunks) - len(used),
                turns_dropped=len(ctx.history) - len(turns),
                prompt_tokens=tokens,
                budget=budget,
            )
        return used, messages
