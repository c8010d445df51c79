"""Answer cache: a question nearly identical to one answered recently is answered from memory.

A shift asks the same things again and again ("what does E203 mean?"), and each model run costs
seconds on a small box; a cache hit costs an embedding and a search (milliseconds).

When a stored answer may be reused, all of these must hold:
- same knowledge-base version (`meta.version` bumps on every ingest, removal or import): a
  changed manual is never answered from an answer grounded on the old one. A version change
  empties the cache at once;
- cosine similarity of the question embeddings >= `similarity` (high: 0.95 by default);
- the same identifiers in both questions (words with a digit: alarm codes, part numbers, press
  names). Embeddings of "alarm E203 on P2" and "alarm E204 on P2" are nearly equal, their
  answers are not;
- the same retrieved chunks, in the same order: the model would have been shown the same
  excerpts, so the stored answer is what it would say (the caller checks this by passing them);
- younger than `ttl_s`.

The same question word for word (up to case and spacing, which neither the uncased embedding
model nor keyword search sees) is found before anything else, by `lookup_exact`: its embedding
and retrieval would be the same, so the worker is not asked for an embedding either, which also
means a repeat does not wait for a generation in progress to embed its text.

Only model-written answers are stored (the caller's rule): fallbacks depend on the reloadable
threshold and on the worker being up (a degraded worker's fallback says nothing about the
question), and they are cheap to produce again anyway.

Bounded (least recently used out), touched from the event loop only; time is passed in.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.answer import Answer

_WORD = re.compile(r"\w[\w./-]*")


def normalise(text: str) -> str:
    """Case and spacing folded: what an uncased embedding model and FTS5 both ignore."""
    return " ".join(text.split()).casefold()


def identifiers(text: str) -> frozenset[str]:
    """Words that contain a digit (E203, P2, HF-2231-B, 4.5), case-folded."""
    words = (m.group(0).rstrip("./-").casefold() for m in _WORD.finditer(text))
    return frozenset(w for w in words if any(c.isdigit() for c in w))


@dataclass(frozen=True, slots=True)
class _Entry:
    text: str
    vector: NDArray[np.float32]
    identifiers: frozenset[str]
    chunk_ids: tuple[int, ...]
    answer: Answer
    stored_at: float


@dataclass(frozen=True, slots=True)
class CacheHit:
    answer: Answer
    similarity: float
    age_s: float


class AnswerCache:
    def __init__(self, *, similarity: float, ttl_s: float, max_entries: int) -> None:
        self.similarity = similarity
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._by_text: dict[str, int] = {}
        self._keys = 0
        self._kb_version: int | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._by_text.clear()
        self._kb_version = None

    def _sync_version(self, kb_version: int) -> None:
        if kb_version != self._kb_version:
            self._entries.clear()
            self._by_text.clear()
            self._kb_version = kb_version

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key)
        if self._by_text.get(entry.text) == key:
            del self._by_text[entry.text]

    def lookup_exact(self, text: str, *, kb_version: int, now: float) -> CacheHit | None:
        """A stored answer to this very question (case and spacing aside), or None. A miss is
        not counted: `lookup` follows with the embedding."""
        self._sync_version(kb_version)
        key = self._by_text.get(normalise(text))
        if key is None:
            return None
        entry = self._entries[key]
        if now - entry.stored_at > self._ttl_s:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return CacheHit(entry.answer, 1.0, now - entry.stored_at)

    def lookup(
        self,
        text: str,
        vector: Sequence[float],
        chunk_ids: Sequence[int],
        *,
        kb_version: int,
        now: float,
    ) -> CacheHit | None:
        """The best stored answer that may be reused for this question, or None."""
        self._sync_version(kb_version)
        query = _unit(vector)
        ids = identifiers(text)
        chunks = tuple(chunk_ids)
        best: tuple[float, int, _Entry] | None = None
        for key, entry in list(self._entries.items()):
            if now - entry.stored_at > self._ttl_s:
                self._drop(key)
                continue
            if entry.identifiers != ids or entry.chunk_ids != chunks:
                continue
            score = float(np.dot(entry.vector, query))
            if score >= self.similarity and (best is None or score > best[0]):
                best = (score, key, entry)
        if best is None:
            self.misses += 1
            return None
        score, key, entry = best
        self._entries.move_to_end(key)
        self.hits += 1
        return CacheHit(entry.answer, score, now - entry.stored_at)

    def store(
        self,
        text: str,
        vector: Sequence[float],
        chunk_ids: Sequence[int],
        answer: Answer,
        *,
        kb_version: int,
        now: float,
    ) -> None:
        self._sync_version(kb_version)
        self._keys += 1
        entry = _Entry(
            normalise(text), _unit(vector), identifiers(text), tuple(chunk_ids), answer, now
        )
        previous = self._by_text.get(entry.text)
        if previous is not None:
            self._drop(previous)
        self._entries[self._keys] = entry
        self._by_text[entry.text] = self._keys
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))


def _unit(vector: Sequence[float]) -> NDArray[np.float32]:
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    return array / norm if norm > 0 else array
