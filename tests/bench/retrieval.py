"""Retrieval latency of the knowledge base vs a numpy brute-force search over the same vectors.

Synthetic corpus: unit vectors with some cluster structure (so KNN is not trivially random) and
short texts with alarm-code-like tokens (so FTS5 has work to do). Each size is its own KB file.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from gateway.rag.chunking import Chunk
from gateway.rag.store import DocumentRecord, KnowledgeBase
from tests.bench.stats import Summary, ratio

DIM = 384
DOC_CHUNKS = 1000
WORDS = [
    "pressure",
    "valve",
    "pump",
    "filter",
    "hydraulic",
    "motor",
    "belt",
    "sensor",
    "encoder",
    "drive",
    "spindle",
    "coolant",
    "temperature",
    "overload",
    "fault",
    "alarm",
    "reset",
    "lockout",
    "bearing",
    "seal",
    "hose",
    "relay",
    "fuse",
]


def _corpus(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    centres = rng.normal(size=(64, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 64, n)] + 0.6 * rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [
        " ".join(rng.choice(WORDS, 12)) + f" E{rng.integers(100, 999)} P{rng.integers(1, 9)}"
        for _ in range(n)
    ]
    return vectors, texts


def build_kb(path: Path, vectors: np.ndarray, texts: list[str]) -> KnowledgeBase:
    kb = KnowledgeBase.open(path, dim=DIM, embedding_identity="bench/synthetic")
    for start in range(0, len(texts), DOC_CHUNKS):
        chunks = [
            Chunk(text=texts[i], section=f"s{i}", page=None, ordinal=i - start, metadata={})
            for i in range(start, min(start + DOC_CHUNKS, len(texts)))
        ]
        kb.upsert_document(
            DocumentRecord(
                path=f"/bench/doc{start}", title="", kind="text", content_hash=str(start)
            ),
            chunks,
            vectors[start : start + len(chunks)].tolist(),
        )
    return kb


def bench_size(n: int, queries: int, top_k: int, rng: np.random.Generator) -> dict[str, object]:
    vectors, texts = _corpus(n, rng)
    qv, qt = _corpus(queries, rng)
    with tempfile.TemporaryDirectory() as tmp:
        kb = build_kb(Path(tmp) / "kb.sqlite3", vectors, texts)
        kb.search(qt[0], qv[0].tolist(), top_k=top_k)  # warm caches
        ours = []
        for q_vec, q_text in zip(qv, qt, strict=True):
            t0 = time.perf_counter()
            kb.search(q_text, q_vec.tolist(), top_k=top_k)
            ours.append(time.perf_counter() - t0)
        kb.close()
    base = []
    for q_vec in qv:
        t0 = time.perf_counter()
        scores = vectors @ q_vec
        top = np.argpartition(-scores, top_k)[:top_k]
        top[np.argsort(-scores[top])]
        base.append(time.perf_counter() - t0)
    s_ours, s_base = Summary.of(ours), Summary.of(base)
    return {
        "chunks": n,
        "ours": s_ours,
        "numpy": s_base,
        "p50_ratio": ratio(s_ours.p50_ms, s_base.p50_ms),
        "p95_ratio": ratio(s_ours.p95_ms, s_base.p95_ms),
    }


def run(
    sizes: tuple[int, ...] = (1_000, 10_000, 100_000), queries: int = 100, top_k: int = 4
) -> list[dict[str, object]]:
    rng = np.random.default_rng(7)
    return [bench_size(n, queries, top_k, rng) for n in sizes]


if __name__ == "__main__":
    for row in run():
        print(row)
