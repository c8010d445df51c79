"""Diagnosis cache: the same alarm on the same device, with the same knowledge base, reuses the
last result within a TTL instead of running the model again.

The key includes `KnowledgeBase.version`, which bumps on every ingest or removal, so a changed
manual is never answered from a stale diagnosis. Bounded LRU; time is passed in, never read.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    value: T
    kb_version: int
    stored_at: float


class DiagnosisCache(Generic[T]):
    def __init__(self, *, ttl_s: float, max_entries: int) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], _Entry[T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str], *, kb_version: int, now: float) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.kb_version != kb_version or now - entry.stored_at > self._ttl_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: tuple[str, str], value: T, *, kb_version: int, now: float) -> None:
        if self._ttl_s <= 0:
            return
        self._entries[key] = _Entry(value, kb_version, now)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
