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
read-only in-memory index (`_VectorIndex`: sign bits + int8 codes, 444 bytes per chunk, 44 MB at
100k), loaded from `chunk_vectors` at the first search and reloaded when `meta.version` changes
(read in the same read transaction as the rest of the search, so a concurrent CLI ingest is either
fully seen or not at all). `chunk_vectors` stays the store of record, and the similarity every hit
reports is still sqlite-vec's exact float cosine. Keyword search drops query terms that match too
many chunks (probed with a bounded, unranked subquery), so a question full of common words cannot
make BM25 rank the whole corpus.
"""

from __future__ import annotations

import json
import math
import re
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

log = get_logger(__name__)

SCHEMA_VERSION = 1
RRF_K = 60
# BM25 ranks a match in the title/section path 3x one in the body: a heading naming the
# alarm code is the strongest keyword evidence a chunk can have.
_FTS_SQL = (
    "SELECT rowid FROM chunk_fts WHERE chunk_fts MATCH ? ORDER BY bm25(chunk_fts, 1.0, 3.0) LIMIT ?"
)
_MAX_QUERY_TERMS = 32
_BUSY_TIMEOUT_MS = 10_000
_MMAP_BYTES = 1 << 30

# Keyword search cost is proportional to the postings of its terms (~0.7 us each here): a term
# whose document frequency is above the budget is no evidence worth that price (at 100k chunks,
# idf <= ln(33) vs ~9 for a code) and is dropped; the rest are kept rarest first while their total
# stays within the budget. Small KBs (chunks <= budget) are never probed: every term is kept.
_KEYWORD_BUDGET_MIN = 2_000
_KEYWORD_BUDGET_FRACTION = 0.03
_DF_PROBE_SQL = "SELECT count(*) FROM (SELECT 1 FROM chunk_fts WHERE chunk_fts MATCH ? LIMIT ?)"

# Dense search: Hamming distance on sign bits picks `max(candidates * _COARSE_FACTOR,
# _COARSE_MIN)` chunks, int8 dot products rank those, the best `candidates` go to fusion.
_COARSE_FACTOR = 40
_COARSE_MIN = 2_000
_LOAD_BATCH = 4_096

# Dropped from keyword queries only (never from the index): they match nearly every chunk and
# would make BM25 rank on noise. If a question is nothing but these, they are kept.
_STOPWORDS = frozenset(
    {
        "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "did", "for", "from",
        "has", "have", "how", "i", "in", "is", "it", "its", "me", "mean", "means", "my", "of", "on",
        "or", "please", "should", "the", "this", "that", "to", "was", "what", "when", "where",
        "which", "who", "why", "will", "with", "you", "your",
    }
)  # fmt: skip
# A user token: word characters joined by - . / (part numbers, codes like HF-2231-B or 3.5).
_QUERY_TOKEN = re.compile(r"\w+(?:[-./]\w+)*")

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


def fts_terms(text: str) -> list[str]:
    """The quoted FTS5 phrases of free text, in order, stopwords dropped (see `fts_query`)."""
    tokens = _QUERY_TOKEN.findall(text.lower())
    unique = list(dict.fromkeys(tokens))
    useful = [t for t in unique if t not in _STOPWORDS] or unique
    return [f'"{t}"' for t in useful[:_MAX_QUERY_TERMS]]


def fts_query(text: str) -> str | None:
    """A safe FTS5 query for free text: each token a quoted phrase, ORed; None when empty.

    Quoting makes every token a literal (no NEAR, column filters, `*`, `-` or `^` from users);
    tokens come from a \\w regex so they cannot contain quotes. A part number such as HF-2231-B
    stays one phrase, which FTS5 tokenizes into the adjacent terms hf 2231 b: it matches the part
    number exactly and still lets "2231" alone find it.
    """
    terms = fts_terms(text)
    return " OR ".join(terms) if terms else None


class KnowledgeBase:
    """One knowledge-base file. Thread-safe by a lock; the gateway uses it from one thread."""

    def __init__(self, conn: apsw.Connection, path: Path, dim: int, identity: str) -> None:
        self._conn = conn
        self._path = path
        self._dim = dim
        self._identity = identity
        self._lock = threading.RLock()
        self._closed = False
        self._index: _VectorIndex | None = None

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
            _prepare_connection(conn)
            _ensure_schema(conn, path, dim, embedding_identity)
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
            return _meta_int(conn, "version")

    def chunk_count(self) -> int:
        with self._locked() as conn:
            return _scalar(conn, "SELECT count(*) FROM chunks")

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
            DocumentInfo(str(p), str(t), str(k), str(h), str(at), _as_int(n))
            for p, t, k, h, at, n in rows
        ]

    def stats(self) -> KbStats:
        with self._locked() as conn:
            documents = _scalar(conn, "SELECT count(*) FROM documents")
            chunks = _scalar(conn, "SELECT count(*) FROM chunks")
            version = _meta_int(conn, "version")
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
            _bump_version(conn)
        log.info(f"kb.document_{outcome}", path=doc.path, chunks=len(chunks))
        return outcome

    def remove_document(self, path: str) -> bool:
        with self._transaction() as conn:
            row = conn.execute("SELECT id FROM documents WHERE path = ?", (path,)).fetchone()
            if row is None:
                return False
            conn.execute("DELETE FROM chunks WHERE document_id = ?", (row[0],))
            conn.execute("DELETE FROM documents WHERE id = ?", (row[0],))
            _bump_version(conn)
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
    ) -> list[Hit]:
        """Hybrid search: KNN + BM25 fused by reciprocal rank fusion; best first."""
        if top_k <= 0:
            return []
        candidates = max(candidates, top_k)
        blob = self._vector_blob(query_vector, what="query vector")
        terms = fts_terms(query_text)
        started = time.perf_counter()
        query = np.frombuffer(blob, dtype=np.float32)
        with self._locked() as conn, _read_snapshot(conn):
            index = self._current_index(conn)
            vector_ranked = index.nearest(query, candidates)
            keyword_ranked = _keyword_ranked(conn, terms, len(index), candidates)
            fused = _reciprocal_rank_fusion(vector_ranked, keyword_ranked)[:top_k]
            if not fused:
                return []
            ids = [chunk_id for chunk_id, _ in fused]
            marks = ",".join("?" * len(ids))
            sql = f"{_FETCH_HITS} WHERE c.id IN ({marks})"  # only "?" marks
            rows = {int(r[0]): r for r in conn.execute(sql, (blob, *ids))}
        vector_rank = {cid: i + 1 for i, cid in enumerate(vector_ranked)}
        keyword_rank = {cid: i + 1 for i, cid in enumerate(keyword_ranked)}
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
            keyword=len(keyword_ranked),
            hits=len(hits),
        )
        return hits

    def warm(self) -> None:
        """Load the in-memory vector index now (else the first search does: ~1 s at 100k)."""
        with self._locked() as conn, _read_snapshot(conn):
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

    def _current_index(self, conn: apsw.Connection) -> _VectorIndex:
        """The vector index of the snapshot `conn` is reading; reloaded when the version moved."""
        version = _meta_int(conn, "version")
        if self._index is None or self._index.version != version:
            started = time.perf_counter()
            self._index = None  # free the old one before building the new one
            self._index = _VectorIndex.load(conn, self._dim, version)
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


class _VectorIndex:
    """Read-only dense index derived from `chunk_vectors` (the store of record).

    Per chunk: its id (8 bytes), the sign bits of its unit vector minus the corpus mean (dim/8
    bytes, rounded up to 8), int8 codes of its unit vector (dim bytes) and their float32 scale:
    444 bytes at 384 dimensions, 44 MB at 100k chunks, against 1536 for float32.
    Centring before taking signs matters for real embeddings, whose dimensions are not zero-mean:
    uncentred signs agree on most bits for every pair of chunks.

    `nearest`: Hamming distance over the bits (XOR + popcount, 48 bytes a chunk) keeps the
    `max(count * _COARSE_FACTOR, _COARSE_MIN)` closest, their int8 dot products with the query
    (error ~1e-4 in cosine) rank them. The similarity a hit reports is computed afterwards from
    the float vectors by sqlite-vec, so it is exact whatever this index gets wrong.
    """

    __slots__ = ("bits", "codes", "ids", "mean", "scales", "version")

    def __init__(
        self,
        *,
        version: int,
        ids: np.ndarray,
        codes: np.ndarray,
        scales: np.ndarray,
        mean: np.ndarray,
        bits: np.ndarray,
    ) -> None:
        self.version = version
        self.ids = ids
        self.codes = codes
        self.scales = scales
        self.mean = mean
        self.bits = bits

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        arrays = (self.ids, self.codes, self.scales, self.mean, self.bits)
        return sum(int(a.nbytes) for a in arrays)

    @classmethod
    def load(cls, conn: apsw.Connection, dim: int, version: int) -> _VectorIndex:
        """One pass over `chunk_vectors`, quantizing in batches (no float copy of the corpus)."""
        id_parts: list[np.ndarray] = []
        code_parts: list[np.ndarray] = []
        scale_parts: list[np.ndarray] = []
        batch_ids: list[int] = []
        batch_blobs: list[bytes] = []

        def flush() -> None:
            vectors = np.frombuffer(b"".join(batch_blobs), dtype=np.float32).reshape(-1, dim)
            codes, scales = _quantize(vectors)
            id_parts.append(np.asarray(batch_ids, dtype=np.int64))
            code_parts.append(codes)
            scale_parts.append(scales)
            batch_ids.clear()
            batch_blobs.clear()

        for chunk_id, blob in conn.execute("SELECT chunk_id, embedding FROM chunk_vectors"):
            batch_ids.append(int(chunk_id))
            batch_blobs.append(bytes(blob))
            if len(batch_ids) == _LOAD_BATCH:
                flush()
        if batch_ids:
            flush()
        if not id_parts:
            empty = np.zeros((0, dim), dtype=np.int8)
            return cls(
                version=version,
                ids=np.zeros(0, dtype=np.int64),
                codes=empty,
                scales=np.zeros(0, dtype=np.float32),
                mean=np.zeros(dim, dtype=np.float32),
                bits=np.ascontiguousarray(_sign_bits(empty.astype(np.float32)).T),
            )
        ids = np.concatenate(id_parts)
        codes = np.concatenate(code_parts)
        scales = np.concatenate(scale_parts)
        total = np.zeros(dim, dtype=np.float64)
        for start in range(0, len(ids), _LOAD_BATCH):
            part = slice(start, start + _LOAD_BATCH)
            total += (codes[part].astype(np.float32) * scales[part, None]).sum(axis=0)
        mean = (total / len(ids)).astype(np.float32)
        bits = np.concatenate(
            [
                _sign_bits(
                    codes[s : s + _LOAD_BATCH].astype(np.float32)
                    * scales[s : s + _LOAD_BATCH, None]
                    - mean
                )
                for s in range(0, len(ids), _LOAD_BATCH)
            ]
        )
        return cls(
            version=version,
            ids=ids,
            codes=codes,
            scales=scales,
            mean=mean,
            bits=np.ascontiguousarray(bits.T),  # word-major: see `nearest`
        )

    def nearest(self, query: np.ndarray, count: int) -> list[int]:
        """Chunk ids of the `count` vectors of highest (approximate) cosine, best first."""
        n = len(self.ids)
        if n == 0 or count <= 0:
            return []
        norm = float(np.linalg.norm(query))
        q = (query / norm if norm > 0 else query).astype(np.float32)
        coarse = max(count * _COARSE_FACTOR, _COARSE_MIN)
        if coarse < n:
            # Word-major bits: one XOR + popcount pass per 64-bit word over contiguous memory
            # (0.5 ms at 100k; 4 ms for the same on row-major bits with a sum over axis 1).
            q_bits = _sign_bits((q - self.mean)[None, :])[0]
            distance = np.bitwise_count(self.bits[0] ^ q_bits[0]).astype(np.uint16)
            for word in range(1, len(q_bits)):
                distance += np.bitwise_count(self.bits[word] ^ q_bits[word])
            # Distances are small integers: a histogram finds the cut in 0.2 ms where
            # argpartition over 100k takes 1 ms. Ties at the cut are taken in chunk order.
            below = np.cumsum(np.bincount(distance, minlength=len(q_bits) * 64 + 1))
            cut = int(np.searchsorted(below, coarse))
            closer = np.flatnonzero(distance < cut)
            at_cut = np.flatnonzero(distance == cut)[: coarse - len(closer)]
            rows = np.concatenate((closer, at_cut))
        else:
            rows = np.arange(n)
        # einsum, not `@`: a matrix-vector product goes to OpenBLAS, whose threads spin against
        # other processes on a busy 2-core box (12 ms p50 measured here for 2000 x 384, 0.06 ms
        # single-threaded); einsum's own loop takes 0.2 ms and never waits for a thread.
        approx = np.einsum("ij,j->i", self.codes[rows].astype(np.float32), q) * self.scales[rows]
        k = min(count, len(rows))
        top = np.argpartition(-approx, k - 1)[:k] if k < len(rows) else np.arange(len(rows))
        ids = self.ids[rows[top]]
        order = np.lexsort((ids, -approx[top]))  # best first, ties by chunk id
        return [int(i) for i in ids[order]]


def _quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes of the unit vectors, scaled per vector so its largest component is +-127."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    peak = np.abs(unit).max(axis=1)
    scales = (np.where(peak > 0, peak, 1.0) / 127.0).astype(np.float32)
    codes = np.rint(unit / scales[:, None]).astype(np.int8)
    return codes, scales


def _sign_bits(vectors: np.ndarray) -> np.ndarray:
    """Sign bits packed into uint64 words (rows padded with zero bits to a multiple of 64)."""
    packed = np.packbits(vectors > 0, axis=1)
    pad = (-packed.shape[1]) % 8
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    return np.ascontiguousarray(packed).view(np.uint64)


def _keyword_ranked(
    conn: apsw.Connection, terms: Sequence[str], chunks: int, candidates: int
) -> list[int]:
    """Chunk ids by BM25 for the affordable `terms` (see `_KEYWORD_BUDGET_*`), best first."""
    if not terms:
        return []
    budget = max(_KEYWORD_BUDGET_MIN, int(chunks * _KEYWORD_BUDGET_FRACTION))
    if chunks > budget:
        terms = _affordable_terms(conn, terms, budget)
        if not terms:
            return []
    return [int(r[0]) for r in conn.execute(_FTS_SQL, (" OR ".join(terms), candidates))]


def _affordable_terms(conn: apsw.Connection, terms: Sequence[str], budget: int) -> list[str]:
    """Rarest terms first while their document frequencies add up to at most `budget`.

    Each frequency is counted by an unranked subquery capped at budget + 1 rows, so probing costs
    at most `budget` postings a term however common the term is.
    """
    frequency = {}
    for term in terms:
        row = conn.execute(_DF_PROBE_SQL, (term, budget + 1)).fetchone()
        frequency[term] = 0 if row is None else int(row[0])
    kept: list[str] = []
    total = 0
    for term in sorted(terms, key=frequency.__getitem__):
        if total + frequency[term] > budget:
            break
        kept.append(term)
        total += frequency[term]
    return kept


@contextmanager
def _read_snapshot(conn: apsw.Connection) -> Iterator[None]:
    """One read transaction: everything read inside sees the same committed version."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def _reciprocal_rank_fusion(*rankings: Sequence[int]) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def _prepare_connection(conn: apsw.Connection) -> None:
    import sqlite_vec

    conn.set_busy_timeout(_BUSY_TIMEOUT_MS)
    try:
        conn.enable_load_extension(True)
        conn.load_extension(sqlite_vec.loadable_path())
    finally:
        conn.enable_load_extension(False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    # Read pages through a memory map instead of read() calls: each exact-similarity lookup in a
    # vec0 table walks the overflow pages of a 1.5 MB chunk blob, 4 hits cost 1.2 ms at 10k
    # chunks with read(), 0.11 ms mapped. A limit, not an allocation (page cache, shared).
    conn.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")


def _ensure_schema(conn: apsw.Connection, path: Path, dim: int, identity: str) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except apsw.Error as exc:
        raise KnowledgeBaseError(f"cannot open knowledge base {path}: {exc}") from exc
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if exists is None:
            _create_schema(conn, dim, identity)
        else:
            _check_meta(conn, path, dim, identity)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _create_schema(conn: apsw.Connection, dim: int, identity: str) -> None:
    conn.execute(
        f"""
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE documents(
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            title TEXT NOT NULL,
            kind TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            ingested_at TEXT NOT NULL,
            chunk_count INTEGER NOT NULL
        );
        -- AUTOINCREMENT: a chunk id cited in an old answer never names a different chunk later.
        CREATE TABLE chunks(
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            section TEXT NOT NULL,
            page INTEGER,
            text TEXT NOT NULL,
            metadata_json TEXT NOT NULL,
            UNIQUE(document_id, ordinal)
        );
        CREATE VIRTUAL TABLE chunk_vectors USING vec0(
            chunk_id INTEGER PRIMARY KEY,
            embedding float[{int(dim)}] distance_metric=cosine
        );
        -- unicode61 keeps letters+digits together (E203, P2 are single tokens) and splits on
        -- '-', so a quoted query "HF-2231-B" is the phrase hf 2231 b: exact, yet 2231 alone
        -- still finds it. porter folds alarm/alarms, slip/slipping. `context` is the document
        -- title and section path, so "E203 on press P2" matches the E203 section of the P2
        -- manual by its heading. Contentless: the text lives in `chunks` only.
        CREATE VIRTUAL TABLE chunk_fts USING fts5(
            text, context, content = '', contentless_delete = 1,
            tokenize = 'porter unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
            INSERT INTO chunk_fts(rowid, text, context) VALUES (
                new.id,
                new.text,
                (SELECT title FROM documents WHERE id = new.document_id) || ' > ' || new.section
            );
        END;
        CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
            DELETE FROM chunk_fts WHERE rowid = old.id;
            DELETE FROM chunk_vectors WHERE chunk_id = old.id;
        END;
        CREATE TRIGGER chunks_au AFTER UPDATE ON chunks BEGIN
            SELECT RAISE(ABORT, 'chunks are immutable: delete and insert instead');
        END;
        """  # noqa: S608 - dim is an int
    )
    conn.execute(
        "INSERT INTO meta(key, value) VALUES ('schema', ?), ('embedding_identity', ?), "
        "('dim', ?), ('version', '0'), ('created_at', ?)",
        (str(SCHEMA_VERSION), identity, str(dim), datetime.now(UTC).isoformat(timespec="seconds")),
    )


def _check_meta(conn: apsw.Connection, path: Path, dim: int, identity: str) -> None:
    meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    schema = meta.get("schema")
    if schema != str(SCHEMA_VERSION):
        raise KnowledgeBaseError(
            f"knowledge base {path} has schema {schema}, this gateway uses {SCHEMA_VERSION}; "
            "rebuild it with `edge-gateway kb ingest` into a new file"
        )
    stored = meta.get("embedding_identity")
    if stored != identity or meta.get("dim") != str(dim):
        raise KnowledgeBaseError(
            f"knowledge base {path} was built with embedding model {stored} "
            f"({meta.get('dim')} dimensions), but the configured model is {identity} "
            f"({dim} dimensions); their vectors cannot be mixed. Configure the original model, "
            "or ingest the documents into a new knowledge-base file."
        )


def _bump_version(conn: apsw.Connection) -> None:
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'")


def _meta_int(conn: apsw.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return 0 if row is None else int(row[0])


def _as_int(value: object) -> int:
    if not isinstance(value, int):
        raise KnowledgeBaseError(f"knowledge base holds {value!r} where an integer belongs")
    return value


def _scalar(conn: apsw.Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return 0 if row is None else int(row[0])


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (used by tests and calibration)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = float(np.linalg.norm(x) * np.linalg.norm(y))
    return 0.0 if denom == 0.0 or math.isnan(denom) else float(x @ y) / denom
