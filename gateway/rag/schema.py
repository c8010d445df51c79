"""The knowledge-base file's schema, its connection settings and its meta table.

One place for what a file must hold to be opened: the schema version, the embedding model
that wrote its vectors (vectors of two models cannot be mixed) and the change counter that
answer caches key on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import apsw

from gateway.errors import KnowledgeBaseError
from gateway.storage_schema import SchemaTooNew, SchemaTooOld, plan

SCHEMA_VERSION = 1
_BUSY_TIMEOUT_MS = 10_000
_MMAP_BYTES = 1 << 30


@contextmanager
def read_snapshot(conn: apsw.Connection) -> Iterator[None]:
    """One read transaction: everything read inside sees the same committed version."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")


def prepare_connection(conn: apsw.Connection) -> None:
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


def ensure_schema(conn: apsw.Connection, path: Path, dim: int, identity: str) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except apsw.Error as exc:
        raise KnowledgeBaseError(f"cannot open knowledge base {path}: {exc}") from exc
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        if exists is None:
            create_schema(conn, dim, identity)
        else:
            check_meta(conn, path, dim, identity)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create_schema(conn: apsw.Connection, dim: int, identity: str) -> None:
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


def check_meta(conn: apsw.Connection, path: Path, dim: int, identity: str) -> None:
    meta = {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    try:
        found = int(meta.get("schema", ""))
    except ValueError:
        raise KnowledgeBaseError(
            f"knowledge base {path} records no schema version ({meta.get('schema')!r}): not a "
            "file this gateway wrote; ingest the documents into a new file"
        ) from None
    # No migration exists yet: schema 1 is the first. A newer file is refused (SchemaTooNew).
    try:
        plan("knowledge base", path, found, SCHEMA_VERSION, frozenset())
    except (SchemaTooNew, SchemaTooOld) as exc:
        raise KnowledgeBaseError(exc.message) from exc
    stored = meta.get("embedding_identity")
    if stored != identity or meta.get("dim") != str(dim):
        raise KnowledgeBaseError(
            f"knowledge base {path} was built with embedding model {stored} "
            f"({meta.get('dim')} dimensions), but the configured model is {identity} "
            f"({dim} dimensions); their vectors cannot be mixed. Configure the original model, "
            "or ingest the documents into a new knowledge-base file."
        )


def bump_version(conn: apsw.Connection) -> None:
    conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'")


def meta_int(conn: apsw.Connection, key: str) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return 0 if row is None else int(row[0])


def as_int(value: object) -> int:
    if not isinstance(value, int):
        raise KnowledgeBaseError(f"knowledge base holds {value!r} where an integer belongs")
    return value


def scalar(conn: apsw.Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return 0 if row is None else int(row[0])
