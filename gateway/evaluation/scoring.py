"""Scoring: what one answer earned, and the totals a plant reads.

Every figure is a count over a known denominator (in-domain or off-topic questions), so a
report says "34/37", never a bare rate. "Shown" is what the terminal shows: the quotes of the
cited sources and the answer text together; the key fact in the retrieved chunks is known only
when the runner saw them (in process), and is then reported over the questions where it was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.evaluation.cases import EvalCase, document_matches, fact_present
from gateway.grounding.loops import has_loop
from models.answer import Answer


@dataclass(frozen=True, slots=True)
class Observation:
    """What the gateway gave for one case."""

    case: EvalCase
    answer: Answer
    latency_ms: float
    chunk_texts: tuple[str, ...] | None = None
    """Texts of every retrieved chunk (in process only), cited or not."""
    quote_ms: float | None = None
    """When the best quote was ready to send as the first partial (in process only)."""


@dataclass(frozen=True, slots=True)
class CaseResult:
    id: str
    in_domain: bool
    fallback: bool
    doc_in_sources: bool
    doc_first: bool
    fact_in_chunks: bool | None
    fact_in_quotes: bool
    fact_in_text: bool
    unsupported_published: bool
    loop_stopped: bool
    loop_published: bool
    replaced: bool
    latency_ms: float
    quote_ms: float | None = None
    prompt_tokens: int = 0

    @property
    def fact_shown(self) -> bool:
        return self.fact_in_quotes or self.fact_in_text

    @property
    def wrong_fallback(self) -> bool:
        return self.in_domain and self.fallback

    @property
    def off_topic_fallback(self) -> bool:
        return not self.in_domain and self.fallback


def score(obs: Observation) -> CaseResult:
    case, answer = obs.case, obs.answer
    documents = [s.document for s in answer.sources]
    expected = case.expected_document
    quotes = " \n".join(s.quote for s in answer.sources if s.quote)
    facts = case.key_facts
    check = answer.check
    # Quotes are the manual's own lines (a table or a list may repeat itself there): only text
    # the model wrote can be a loop the gateway published.
    generated = (
        not answer.fallback
        and check is not None
        and check.mode != "extractive"
        and not check.replaced
    )
    return CaseResult(
        id=case.id,
        in_domain=case.in_domain,
        fallback=answer.fallback,
        doc_in_sources=expected is not None
        and any(document_matches(d, expected) for d in documents),
        doc_first=expected is not None
        and bool(documents)
        and document_matches(documents[0], expected),
        fact_in_chunks=None
        if obs.chunk_texts is None
        else bool(facts) and fact_present(" \n".join(obs.chunk_texts), facts),
        fact_in_quotes=bool(facts) and fact_present(quotes, facts),
        fact_in_text=bool(facts) and not answer.fallback and fact_present(answer.text, facts),
        unsupported_published=not answer.fallback and not answer.grounded,
        loop_stopped=check is not None and check.stopped == "loop",
        loop_published=generated and has_loop(answer.text),
        replaced=check is not None and check.replaced,
        latency_ms=obs.latency_ms,
        quote_ms=obs.quote_ms,
        prompt_tokens=answer.usage.prompt_tokens,
    )


@dataclass(frozen=True, slots=True)
class Count:
    hits: int
    of: int

    @property
    def rate(self) -> float:
        return self.hits / self.of if self.of else math.nan

    def __str__(self) -> str:
        return f"{self.hits}/{self.of}" + (f" ({self.rate:.2f})" if self.of else "")


@dataclass(frozen=True, slots=True)
class Totals:
    in_domain: int
    off_topic: int
    doc_in_sources: Count
    doc_first: Count
    fact_in_chunks: Count
    fact_in_quotes: Count
    fact_in_text: Count
    fact_shown: Count
    unsupported_published: Count
    loops_stopped: Count
    loops_published: Count
    replaced: Count
    wrong_fallbacks: Count
    off_topic_fallbacks: Count
    latency_p50_ms: float
    latency_p95_ms: float
    quote_p50_ms: float
    quote_to_total_p50: float
    prompt_tokens_p50: float


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def totals(results: Sequence[CaseResult]) -> Totals:
    inside = [r for r in results if r.in_domain]
    outside = [r for r in results if not r.in_domain]
    answered = [r for r in results if not r.fallback]
    with_chunks = [r for r in inside if r.fact_in_chunks is not None]
    latencies = [r.latency_ms for r in results]
    quotes = [r.quote_ms for r in results if r.quote_ms is not None]

    def count(rows: Sequence[CaseResult], hit: str) -> Count:
        return Count(sum(bool(getattr(r, hit)) for r in rows), len(rows))

    return Totals(
        in_domain=len(inside),
        off_topic=len(outside),
        doc_in_sources=count(inside, "doc_in_sources"),
        doc_first=count(inside, "doc_first"),
        fact_in_chunks=count(with_chunks, "fact_in_chunks"),
        fact_in_quotes=count(inside, "fact_in_quotes"),
        fact_in_text=count(inside, "fact_in_text"),
        fact_shown=count(inside, "fact_shown"),
        unsupported_published=count(answered, "unsupported_published"),
        loops_stopped=count(answered, "loop_stopped"),
        loops_published=count(answered, "loop_published"),
        replaced=count(answered, "replaced"),
        wrong_fallbacks=count(inside, "wrong_fallback"),
        off_topic_fallbacks=count(outside, "off_topic_fallback"),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        quote_p50_ms=percentile(quotes, 50),
        quote_to_total_p50=percentile(
            [r.quote_ms / r.latency_ms for r in results if r.quote_ms is not None and r.latency_ms],
            50,
        ),
        prompt_tokens_p50=percentile(
            [float(r.prompt_tokens) for r in answered if r.prompt_tokens], 50
        ),
    )
