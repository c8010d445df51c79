"""Latency summaries for the benchmark report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    p50_ms: float
    p95_ms: float
    mean_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Summary:
        ms = np.asarray(seconds, dtype=np.float64) * 1000
        return cls(
            n=len(ms),
            p50_ms=float(np.percentile(ms, 50)),
            p95_ms=float(np.percentile(ms, 95)),
            mean_ms=float(ms.mean()),
        )


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")
