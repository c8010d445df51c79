"""Retrieval latency of the knowledge base vs a numpy brute-force search over the same vectors.

Synthetic corpus: unit vectors with some cluster structure (so KNN is not trivially random) and
texts shaped like real manual chunks, so FTS5 does the work it does in a plant. Each size is its
own KB file.

Why the texts look like this: real chunks are ~1200 characters (~100+ words) drawn from a
vocabulary of thousands of words with a Zipf distribution; stopwords are in every chunk, common
domain words ("pressure", "pump") in 10-30% of them, and most words, alarm codes (E203) and part
numbers (HF-2231-B) in very few. An earlier version drew 14 words from a vocabulary of 22, so every
query term matched half the corpus and BM25 had to rank all 100k rows for every question: a cost
no real KB has for most questions. Questions are drawn from the same distribution (including
stopwords and common words), half of them with a code, so the common-word case is still measured.
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
CHUNK_WORDS = 100
QUERY_WORDS = (4, 10)
VOCABULARY = 5000
ZIPF_S = 1.07
STOPWORDS = (
    "the", "of", "and", "to", "a", "in", "is", "for", "on", "with", "be", "by", "this", "that",
    "it", "as", "are", "or", "from", "at", "an", "if", "not", "when", "check", "do", "does", "what",
    "how", "which", "can", "should", "must", "will", "then", "before", "after",
)  # fmt: skip
_SYLLABLES = (
    "ka", "ro", "ven", "til", "mar", "sen", "dor", "pel", "gri", "fo", "lu", "bra", "nex", "tor",
    "qui", "sa", "mo", "ret", "ulm", "zan", "pi", "cor", "dex", "hal", "vo", "ner", "sti", "lam",
    "bo", "tek",
)  # fmt: skip


class _Words:
    """Stopwords first, then pseudo-words, drawn with Zipf weights by rank."""

    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        words: set[str] = set()
        while len(words) < VOCABULARY:
            words.add("".join(rng.choice(_SYLLABLES, int(rng.integers(2, 4)))))
        self.words = np.array([*STOPWORDS, *sorted(words)])
        weights = 1.0 / np.arange(1, len(self.words) + 1) ** ZIPF_S
        self.p = weights / weights.sum()

    def draw(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        return rng.choice(self.words, size=shape, p=self.p)


_WORDS = _Words()


def _code(rng: np.random.Generator) -> str:
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return f"E{rng.integers(100, 999)}"
    if kind == 1:
        return f"P{rng.integers(1, 9)}"
    return f"HF-{rng.integers(1000, 9999)}-{'ABCD'[int(rng.integers(0, 4))]}"


def _vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = np.random.default_rng(3).normal(size=(64, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 64, n)] + 0.6 * rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _corpus(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    words = _WORDS.draw(rng, (n, CHUNK_WORDS))
    texts = [" ".join(row) + f" {_code(rng)} {_code(rng)}" for row in words]
    return _vectors(n, rng), texts


def _questions(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    words = _WORDS.draw(rng, (n, QUERY_WORDS[1]))
    lengths = rng.integers(QUERY_WORDS[0], QUERY_WORDS[1] + 1, n)
    texts = [
        " ".join(row[:length]) + (f" {_code(rng)}" if rng.random() < 0.5 else "")
        for row, length in zip(words, lengths, strict=True)
    ]
    return _vectors(n, rng), texts


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
    qv, qt = _questions(queries, rng)
    ours: list[float] = []
    base: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        kb = build_kb(Path(tmp) / "kb.sqlite3", vectors, texts)
        kb.search(qt[0], qv[0].tolist(), top_k=top_k)  # warm caches, load the vector index
        # Interleaved, query by query: on a shared machine the load changes within seconds, and
        # both sides must see the same load for the ratio to mean anything.
        for q_vec, q_text in zip(qv, qt, strict=True):
            q_list = q_vec.tolist()
            t0 = time.perf_counter()
            kb.search(q_text, q_list, top_k=top_k)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            scores = vectors @ q_vec
            top = np.argpartition(-scores, top_k)[:top_k]
            top[np.argsort(-scores[top])]
            base.append(time.perf_counter() - t0)
        kb.close()
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
