"""The knowledge base: one SQLite file with chunks, their vectors (sqlite-vec) and an FTS5 index.

Why apsw and not the standard `sqlite3` module: sqlite-vec is a loadable extension, and Python
builds without `--enable-loadable-sqlite-extensions` (pyenv's default, several distributions) have
no `enable_load_extension`. apsw always can load extensions, ships wheels for x86-64 and aarch64
(Pi, Jetson), and bundles a current SQLite, so FTS5 behaves the same on every box.

Consistency: chunk rows, FTS rows and vectors change in one transaction; FTS5 (external content)
and vector deletions are driven by triggers on `chunks`, so no code path can forget one of them.
Every change bumps `meta.version`, which answer caches use as part of their key.

Search is hybrid. Dense KNN finds paraphrases ("oil pressure too low" for E203); BM25 finds exact
codes ("E203", "HF-2231-B") that embeddings blur. They are fused by reciprocal rank fusion, and
every returned hit carries its true cosine similarity to the question, including hits found only
by keywords, because the caller's fallback threshold is on that number.

Speed (issue 2: p95 within 2x of numpy brute force at 100k chunks). The sqlite-vec 0.1.9 wheel is
built without AVX and is brute force only: a float KNN reads every 1536-byte vector through SQLite
blob I/O (83 ms at 100k here). Its quantized columns do not rescue it: a `bit[384]` KNN costs 31 ms
at k=200 and 60 ms at k=400 (its top-k grows with k), and rescoring through vec0 point lookups costs
~180 us per vector (each reads into a 1 MB chunk blob). So the dense search runs on a derived,
read-only in-memory index (`VectorIndex`: sign bits + int8 codes, 444 bytes per chunk, 44 MB at
100k), loaded from `chunk_vectors` at the first search and reloaded when `meta.version` changes
(read in the same read transaction as the rest of the search, so a concurrent CLI ingest is either
fully seen or not at all). `chunk_vectors` stays the store of record, and the similarity every hit
reports is still sqlite-vec's exact float cosine. Keyword search drops query terms that match too
many chunks (probed with a bounded, unranked subquery), so a question full of common words cannot
make BM25 rank the whole corpus.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import apsw
import numpy as np

from gateway.errors import KnowledgeBaseError
from gateway.logging import get_logger
from gateway.rag.chunking import Chunk
from gateway.rag.fusion import reciprocal_rank_fusion
from gateway.rag.keywords import fts_terms, keyword_ranked
from gateway.rag.schema import (
    as_int,
    bump_version,
    ensure_schema,
    meta_int,
    prepare_connection,
    read_snapshot,
    scalar,
)
from gateway.rag.vector_index import VectorIndex

log = get_logger(__name__)


_FETCH_HITS = (
    "SELECT c.id, d.path, d.title, c.section, c.page, c.text, vec_distance_cosine(v.embedding, ?) "
    "FROM chunks c JOIN documents d ON d.id = c.document_id "
    "JOIN chunk_vectors v ON v.chunk_id = c.id"
)

UpsertOutcome = Literal["added", "replaced", "unchanged"]


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    path: str
    title: str
    kind: str
    content_hash: str


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    path: str
    title: str
    kind: str
    content_hash: str
    ingested_at: str
    chunk_count: int


@dataclass(frozen=True, slots=True)
class KbStats:
    documents: int
    chunks: int
    db_bytes: int
    embedding_identity: str
    dim: int
    version: int


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: int
    document: str
    title: str
    section: str
    page: int | None
    text: str
    similarity: float
    vector_rank: int | None
    keyword_rank: int | None
    fused_score: float


class KnowledgeBase:
    """One knowledge-base file. Thread-safe by a lock; the gateway uses it from one thread."""

    def __init__(self, conn: apsw.Connection, path: Path, dim: int, identity: str) -> None:
        self._conn = conn
        self._path = path
        self._dim = dim
        self._identity = identity
        self._lock = threading.RLock()
        self._closed = False
        self._index: VectorIndex | None = None

    @classmethod
    def open(cls, path: Path, *, dim: int, embedding_identity: str) -> KnowledgeBase:
        """Open or create the file; refuse one built with another embedding model."""
        if dim <= 0:
            raise ValueError(f"dim must be positive, got {dim}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = apsw.Connection(str(path))
        except (OSError, apsw.Error) as exc:
            raise KnowledgeBaseError(f"cannot open knowledge base {path}: {exc}") from exc
        try:
            prepare_connection(conn)
            ensure_schema(conn, path, dim, embedding_identity)
        except apsw.Error as exc:
            conn.close()
            raise KnowledgeBaseError(f"cannot open knowledge base {path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        kb = cls(conn, path, dim, embedding_identity)
        log.info("kb.opened", path=str(path), dim=dim, identity=embedding_identity)
        return kb

    # --- reads ------------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def embedding_identity(self) -> str:
        return self._identity

    @property
    def version(self) -> int:
        """Read from the file each time: another process (the `kb` CLI) may have changed it."""
        with self._locked() as conn:
            return meta_int(conn, "version")

    def chunk_count(self) -> int:
        with self._locked() as conn:
            return scalar(conn, "SELECT count(*) FROM chunks")

    def document_state(self, path: str) -> str | None:
        with self._locked() as conn:
            row = conn.execute(
                "SELECT content_hash FROM documents WHERE path = ?", (path,)
            ).fetchone()
            return None if row is None else str(row[0])

    def list_documents(self) -> list[DocumentInfo]:
        with self._locked() as conn:
            rows = conn.execute(
                "SELECT path, title, kind, content_hash, ingested_at, chunk_count "
                "FROM documents ORDER BY path"
            ).fetchall()
        return [
            DocumentInfo(str(p), str(t), str(k), str(h), str(at), as_int(n))
            for p, t, k, h, at, n in rows
        ]

    def stats(self) -> KbStats:
        with self._locked() as conn:
            documents = scalar(conn, "SELECT count(*) FROM documents")
            chunks = scalar(conn, "SELECT count(*) FROM chunks")
            version = meta_int(conn, "version")
        db_bytes = sum(
            p.stat().st_size
            for p in (self._path, Path(f"{self._path}-wal"), Path(f"{self._path}-shm"))
            if p.exists()
        )
        return KbStats(documents, chunks, db_bytes, self._identity, self._dim, version)

    # --- writes -----------------------------------------------------------------------------

    def upsert_document(
        self,
        doc: DocumentRecord,
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]],
    ) -> UpsertOutcome:
        """Add or replace a document with its chunks and vectors, all in one transaction."""
        if len(chunks) != len(vectors):
            raise KnowledgeBaseError(f"{doc.path}: {len(chunks)} chunks but {len(vectors)} vectors")
        if not chunks:
            raise KnowledgeBaseError(f"{doc.path}: a document needs at least one chunk")
        blobs = [
            self._vector_blob(v, what=f"{doc.path} chunk {c.ordinal}")
            for c, v in zip(chunks, vectors, strict=True)
        ]
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT id, content_hash FROM documents WHERE path = ?", (doc.path,)
            ).fetchone()
            if row is not None and row[1] == doc.content_hash:
                return "unchanged"
            now = datetime.now(UTC).isoformat(timespec="seconds")
            if row is None:
                conn.execute(
                    "INSERT INTO documents(path, title, kind, content_hash, ingested_at, "
                    "chunk_count) VALUES (?, ?, ?, ?, ?, ?)",
                    (doc.path, doc.title, doc.kind, doc.content_hash, now, len(chunks)),
                )
                doc_id = conn.last_insert_rowid()
                outcome: UpsertOutcome = "added"
            else:
                doc_id = int(row[0])
                conn.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
                conn.execute(
                    "UPDATE documents SET title = ?, kind = ?, content_hash = ?, ingested_at = ?, "
                    "chunk_count = ? WHERE id = ?",
                    (doc.title, doc.kind, doc.content_hash, now, len(chunks), doc_id),
                )
                outcome = "replaced"
            for chunk, blob in zip(chunks, blobs, strict=True):
                conn.execute(
                    "INSERT INTO chunks(document_id, ordinal, section, page, text, metadata_json) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        doc_id,
                        chunk.ordinal,
                        chunk.section,
                        chunk.page,
                        chunk.text,
                        json.dumps(dict(chunk.metadata), ensure_ascii=False),
                    ),
                )
                conn.execute(
                    "INSERT INTO chunk_vectors(chunk_id, embedding) VALUES (?, ?)",
                    (conn.last_insert_rowid(), blob),
                )
            bump_version(conn)
        log.info(f"kb.document_{outcome}", path=doc.path, chunks=len(chunks))
        return outcome

    def remove_document(self, path: str) -> bool:
        with self._transaction() as conn:
            row = conn.execute("SELECT id FROM documents WHERE path = ?", (path,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM chunks WHERE document_id = ?", (row[0],))
            conn.execute("DELETE FROM documents WHERE id = ?", (row[0],))
            bump_version(conn)
        log.info("kb.document_removed", path=path)
        return True

    # --- search -----------------------------------------------------------------------------

    def search(
        self,
        query_text: str,
        query_vector: Sequence[float],
        *,
        top_k: int,
        candidates: int = 50,
        prefer: Sequence[int] = (),
    ) -> list[Hit]:
        """Hybrid search: KNN + BM25 fused by reciprocal rank fusion; best first.

        `prefer` (the chunks a conversation cited before) adds two rankings to the fusion: the
        query's own 10 best candidates that come from the same documents, and the preferred
        chunks themselves. A follow-up stays in the manual the conversation is about while its
        own words still pick the section. Measured (`make bench`, section conversations, key
        fact in the answer of 26 follow-ups): the chunks alone 20, every same-document candidate
        plus the chunks 22 but it lifted unrelated sections of the manual over the maintenance
        log a follow-up asked about (tests/test_conversation_e2e.py), this 21."""
        if top_k <= 0:
            return []
        candidates = max(candidates, top_k)
        blob = self._vector_blob(query_vector, what="query vector")
        terms = fts_terms(query_text)
        started = time.perf_counter()
        query = np.frombuffer(blob, dtype=np.float32)
        with self._locked() as conn, read_snapshot(conn):
            index = self._current_index(conn)
            vector_ranked = index.nearest(query, candidates)
            by_keyword = keyword_ranked(conn, terms, len(index), candidates)
            fused = reciprocal_rank_fusion(vector_ranked, by_keyword)
            if prefer:
                fused = reciprocal_rank_fusion(
                    vector_ranked, by_keyword, _same_documents(conn, fused, prefer), list(prefer)
                )
            fused = fused[:top_k]
            if not fused:
                return []
            ids = [chunk_id for chunk_id, _ in fused]
            marks = ",".join("?" * len(ids))
            sql = f"{_FETCH_HITS} WHERE c.id IN ({marks})"  # only "?" marks
            rows = {int(r[0]): r for r in conn.execute(sql, (blob, *ids))}
        vector_rank = {cid: i + 1 for i, cid in enumerate(vector_ranked)}
        keyword_rank = {cid: i + 1 for i, cid in enumerate(by_keyword)}
        hits = [
            Hit(
                chunk_id=cid,
                document=str(rows[cid][1]),
                title=str(rows[cid][2]),
                section=str(rows[cid][3]),
                page=None if rows[cid][4] is None else int(rows[cid][4]),
                text=str(rows[cid][5]),
                similarity=max(-1.0, min(1.0, 1.0 - float(rows[cid][6]))),
                vector_rank=vector_rank.get(cid),
                keyword_rank=keyword_rank.get(cid),
                fused_score=score,
            )
            for cid, score in fused
            if cid in rows
        ]
        log.debug(
            "kb.searched",
            ms=round((time.perf_counter() - started) * 1000, 2),
            vector=len(vector_ranked),
            keyword=len(by_keyword),
            hits=len(hits),
        )
        return hits

    def warm(self) -> None:
        """Load the in-memory vector index now (else the first search does: ~1 s at 100k)."""
        with self._locked() as conn, read_snapshot(conn):
            self._current_index(conn)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------

    def _current_index(self, conn: apsw.Connection) -> VectorIndex:
        """The vector index of the snapshot `conn` is reading; reloaded when the version moved."""
        version = meta_int(conn, "version")
        if self._index is None or self._index.version != version:
            started = time.perf_counter()
            self._index = None  # free the old one before building the new one
            self._index = VectorIndex.load(conn, self._dim, version)
            log.info(
                "kb.vector_index_loaded",
                chunks=len(self._index),
                version=version,
                mib=round(self._index.nbytes / 2**20, 1),
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
        return self._index

    def _vector_blob(self, vector: Sequence[float], *, what: str) -> bytes:
        array = np.asarray(vector, dtype=np.float32)
        if array.shape != (self._dim,):
            raise KnowledgeBaseError(
                f"{what} has shape {array.shape}, the knowledge base stores {self._dim} dimensions"
            )
        if not np.all(np.isfinite(array)):
            raise KnowledgeBaseError(f"{what} contains NaN or infinity")
        return array.tobytes()

    @contextmanager
    def _locked(self) -> Iterator[apsw.Connection]:
        with self._lock:
            if self._closed:
                raise KnowledgeBaseError(f"knowledge base {self._path} is closed")
            try:
                yield self._conn
            except apsw.Error as exc:
                raise KnowledgeBaseError(f"knowledge base {self._path}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[apsw.Connection]:
        """BEGIN IMMEDIATE: take the write lock up front so a concurrent CLI ingest waits
        (busy timeout) instead of failing half-way with SQLITE_BUSY on upgrade."""
        with self._locked() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


SAME_DOCUMENT_CANDIDATES = 10
"""Only the query's own best candidates get the same-document boost: a conversation's manual
must not lift its unrelated sections over another document the follow-up is about."""


def _same_documents(
    conn: apsw.Connection, fused: Sequence[tuple[int, float]], prefer: Sequence[int]
) -> list[int]:
    """The candidates, in fused order, that belong to a document one of `prefer` is from: a
    follow-up stays in the manual the conversation is about, and the query still picks the
    section within it."""
    ids = [cid for cid, _ in fused[:SAME_DOCUMENT_CANDIDATES]]
    if not ids:
        return []
    marks, wanted = ",".join("?" * len(ids)), ",".join("?" * len(prefer))
    sql = (
        f"SELECT id FROM chunks WHERE id IN ({marks}) AND document_id IN"  # noqa: S608
        f" (SELECT document_id FROM chunks WHERE id IN ({wanted}))"
    )
    same = {int(row[0]) for row in conn.execute(sql, (*ids, *prefer))}
    return [cid for cid in ids if cid in same]
