"""In-process figures behind the health message and the Prometheus endpoint.

Both read this one object, so a dashboard and the retained health message never disagree: the
health message shows a sliding window (p50/p95 of the last answers), Prometheus cumulative
histograms of the same observations.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

from models.answer import AnswerCheck, Latency
from models.health import Counters, LatencySummary

WINDOW = 512
STAGES = ("queue", "retrieve", "generate", "total")
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass
class Histogram:
    """A cumulative histogram (Prometheus semantics) kept with plain ints on the event loop."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    samples: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.samples += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, count <= bound) pairs ending with +Inf, as Prometheus exposes them."""
        running = 0
        buckets: list[tuple[str, int]] = []
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            buckets.append((repr(float(bound)), running))
        buckets.append(("+Inf", self.samples))
        return buckets


def _stage_histograms() -> dict[str, Histogram]:
    return {stage: Histogram(LATENCY_BUCKETS_S) for stage in STAGES}


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, round(q / 100 * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Metrics:
    """Mutable counters, touched from the event loop only."""

    received: int = 0
    answered: int = 0
    cached: int = 0
    fallback: int = 0
    failed: int = 0
    busy: int = 0
    expired: int = 0
    duplicate: int = 0
    rejected: int = 0
    rate_limited: int = 0
    model_runs: int = 0
    journal_write_failures: int = 0
    extractive: int = 0
    checked: int = 0
    unsupported: int = 0
    replaced: int = 0
    loops_stopped: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    tokens_per_s: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    stage_seconds: dict[str, Histogram] = field(default_factory=_stage_histograms)
    tokens_generated: int = 0
    generate_seconds: float = 0.0

    def observe_answer(self, latency: Latency, completion_tokens: int) -> None:
        """One answer (or fallback): the health window and the histograms see the same figure."""
        self.latencies_ms.append(latency.total_ms)
        for stage, ms in (
            ("queue", latency.queue_ms),
            ("retrieve", latency.retrieve_ms),
            ("generate", latency.generate_ms),
            ("total", latency.total_ms),
        ):
            if stage != "generate" or ms > 0:  # fallbacks never reached the model
                self.stage_seconds[stage].observe(ms / 1000)
        gen_s = latency.generate_ms / 1000
        if gen_s > 0 and completion_tokens:
            # Prompt processing included: the rate a terminal actually experiences.
            self.tokens_per_s.append(completion_tokens / gen_s)
            self.tokens_generated += completion_tokens
            self.generate_seconds += gen_s

    def observe_check(self, check: AnswerCheck | None) -> None:
        """How a fresh (not cached) answer's text was made and what its check found."""
        if check is None:
            return
        if check.mode == "extractive":
            self.extractive += 1
            return
        self.checked += 1
        self.unsupported += bool(check.unsupported)
        self.replaced += check.replaced
        self.loops_stopped += check.stopped == "loop"

    def counters(self) -> Counters:
        return Counters(
            received=self.received,
            answered=self.answered,
            cached=self.cached,
            fallback=self.fallback,
            failed=self.failed,
            busy=self.busy,
            expired=self.expired,
            duplicate=self.duplicate,
            rejected=self.rejected,
            rate_limited=self.rate_limited,
            journal_write_failures=self.journal_write_failures,
            extractive=self.extractive,
            checked=self.checked,
            unsupported=self.unsupported,
            replaced=self.replaced,
            loops_stopped=self.loops_stopped,
        )

    def latency(self) -> LatencySummary:
        values = sorted(self.latencies_ms)
        if not values:
            return LatencySummary(p50_ms=None, p95_ms=None, samples=0)
        return LatencySummary(
            p50_ms=percentile(values, 50), p95_ms=percentile(values, 95), samples=len(values)
        )

    def mean_tokens_per_s(self) -> float | None:
        if not self.tokens_per_s:
            return None
        return sum(self.tokens_per_s) / len(self.tokens_per_s)
