"""The knowledge base as the running gateway holds it: swappable on SIGHUP, sized for health.

All access goes through one SerialExecutor thread (apsw calls block). `reopen` opens the new
file first and swaps only when that worked, so a bad `kb.path` on reload leaves the old one in
service. The chunk count is cached and refreshed in the background: the health message and the
metrics read the cache, never the database, from the loop or the scrape thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from pathlib import Path

from gateway.config import Settings
from gateway.executor import SerialExecutor
from gateway.logging import get_logger
from gateway.rag.opening import open_knowledge_base
from gateway.rag.search import SearchHit
from gateway.rag.store import KnowledgeBase

log = get_logger(__name__)


class LiveKnowledgeBase:
    def __init__(self, kb: KnowledgeBase, io: SerialExecutor, *, top_k: int, chunks: int) -> None:
        self._kb = kb
        self._io = io
        self.top_k = top_k
        self.chunks = chunks

    @property
    def path(self) -> Path:
        return self._kb.path

    def size_bytes(self) -> int:
        """The database file plus its WAL (what a backup or the disk has to hold)."""
        total = 0
        for path in (self.path, Path(f"{self.path}-wal")):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    async def search(
        self, text: str, vector: Sequence[float], /, *, prefer: Sequence[int] = ()
    ) -> Sequence[SearchHit]:
        hits: Sequence[SearchHit] = await self._io.run(
            functools.partial(self._kb.search, text, vector, top_k=self.top_k, prefer=prefer)
        )
        return hits

    async def version(self) -> int:
        """The knowledge base's change counter (caches key on it: an ingest invalidates them)."""
        version: int = await self._io.run(lambda: self._kb.version)
        return version

    async def refresh(self) -> int:
        """Re-read the chunk count and reload the vector index if a CLI ingest or `kb import`
        changed the file, so the next question does not pay for the reload."""
        self.chunks = await self._io.run(self._kb.chunk_count)
        await self._io.run(self._kb.warm)
        return self.chunks

    async def run_refresh(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("kb.refresh_failed", error=str(exc))

    async def reopen(self, settings: Settings) -> None:
        """Switch to `settings.kb_path`; raises (and keeps the old file) if it cannot be opened."""
        new, _ = await self._io.run(open_knowledge_base, settings)
        await self._io.run(new.warm)
        old, self._kb = self._kb, new
        await self._io.run(old.close)
        await self.refresh()
        log.info("kb.switched", old=str(old.path), new=str(new.path), chunks=self.chunks)

    async def close(self) -> None:
        await self._io.run(self._kb.close)
