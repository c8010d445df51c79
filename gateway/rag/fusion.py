"""Fusing the dense and keyword rankings, and the similarity every hit reports."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

RRF_K = 60


def reciprocal_rank_fusion(*rankings: Sequence[int]) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (used by tests and calibration)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    return 0.0 if denom == 0.0 or math.isnan(denom) else float(x @ y) / denom
