"""In-process figures behind the health message (and, later, the Prometheus endpoint)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from models.health import Counters, LatencySummary

WINDOW = 512


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
    fallback: int = 0
    failed: int = 0
    busy: int = 0
    expired: int = 0
    duplicate: int = 0
    rejected: int = 0
    model_runs: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    tokens_per_s: deque[float] = field(default_factory=lambda: deque(maxlen=64))

    def counters(self) -> Counters:
        return Counters(
            received=self.received,
            answered=self.answered,
            fallback=self.fallback,
            failed=self.failed,
            busy=self.busy,
            expired=self.expired,
            duplicate=self.duplicate,
            rejected=self.rejected,
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
