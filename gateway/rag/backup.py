"""Knowledge-base backup and restore: one checksummed file for a USB stick or a NAS.

Format: an uncompressed tar (inspectable with `tar tvf`) holding `manifest.json` first and
`kb.sqlite3`. The manifest carries the format version, the sha256 and size of the database,
the embedding model identity and dimension, and the document/chunk counts. Uncompressed
because the vectors are float32 noise to a compressor and the SD card is the slow part.

Consistency while the gateway runs: the database is copied with SQLite's online backup API
(apsw `Connection.backup`), which reads a consistent snapshot through the WAL; copying the file
would miss committed pages still in `-wal`, or catch a half-written checkpoint.

Restore refuses, before touching anything: a file whose checksum does not match, a manifest
that disagrees with the database's own `meta` table, a database that fails `integrity_check`,
and a knowledge base built with another embedding model than the one this gateway is
configured with (its vectors would be compared with incompatible query vectors). The restore
itself is again the backup API, into the live file, so a running gateway sees the new content
at its next search instead of a file pulled from under its connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apsw

from gateway.errors import KnowledgeBaseError
from gateway.logging import get_logger

log = get_logger(__name__)

FORMAT = "edge-gateway-kb-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "kb.sqlite3"
_MAX_MANIFEST_BYTES = 64 * 1024
_CHUNK = 1 << 20
_BACKUP_PAGES = 1024  # per step: lets writers in between on a big file


class BackupError(KnowledgeBaseError):
    """A backup cannot be written, or a file cannot be restored (the reason is the message)."""


@dataclass(frozen=True, slots=True)
class Manifest:
    embedding_identity: str
    dim: int
    documents: int
    chunks: int
    kb_version: int
    sha256: str
    size: int
    created_at: str

    def to_json(self) -> bytes:
        body: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION}
        body.update({k: getattr(self, k) for k in self.__slots__})
        return json.dumps(body, indent=2).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            body = json.loads(raw)
            if body.get("format") != FORMAT:
                raise BackupError("not an edge-gateway knowledge-base backup")
            if body.get("format_version") != FORMAT_VERSION:
                raise BackupError(
                    f"backup format version {body.get('format_version')} is not supported "
                    f"(this gateway reads version {FORMAT_VERSION})"
                )
            return cls(**{k: body[k] for k in cls.__slots__})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupError(f"the backup's manifest is unreadable: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ExportReport:
    manifest: Manifest
    path: Path
    bytes: int
    seconds: float


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _copy_database(source: apsw.Connection, target: Path) -> None:
    """Online backup of `source` into a new single-file database at `target`."""
    dest = apsw.Connection(str(target))
    try:
        with dest.backup("main", source, "main") as backup:
            while not backup.done:
                backup.step(_BACKUP_PAGES)
        # A backup of a WAL database is itself in WAL mode: make it one self-contained file.
        dest.execute("PRAGMA journal_mode = DELETE")
    finally:
        dest.close()


def _meta(conn: apsw.Connection) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    except apsw.Error as exc:
        raise BackupError(f"not a knowledge base (no meta table): {exc}") from exc


def _count(conn: apsw.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
    return 0 if row is None else int(row[0])


def export_kb(kb_path: Path, out: Path) -> ExportReport:
    """Write a backup of the knowledge base at `kb_path` to `out` (replaced atomically)."""
    if not kb_path.is_file():
        raise BackupError(f"no knowledge base at {kb_path}")
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".kb-export-") as tmp:
        copy = Path(tmp) / DATABASE
        source = apsw.Connection(str(kb_path), flags=apsw.SQLITE_OPEN_READWRITE)
        try:
            source.set_busy_timeout(10_000)
            _copy_database(source, copy)
        finally:
            source.close()
        conn = apsw.Connection(str(copy), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            meta = _meta(conn)
            documents, chunks = _count(conn, "documents"), _count(conn, "chunks")
        finally:
            conn.close()
        manifest = Manifest(
            embedding_identity=meta.get("embedding_identity", ""),
            dim=int(meta.get("dim", "0")),
            documents=documents,
            chunks=chunks,
            kb_version=int(meta.get("version", "0")),
            sha256=_sha256(copy),
            size=copy.stat().st_size,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        partial = Path(tmp) / "backup.tar"
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            raw = manifest.to_json()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(raw), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(raw))
            tar.add(copy, arcname=DATABASE, recursive=False)
        with partial.open("rb") as fh:
            os.fsync(fh.fileno())
        partial.replace(out)
    report = ExportReport(manifest, out, out.stat().st_size, time.monotonic() - started)
    log.info(
        "kb.exported",
        path=str(out),
        bytes=report.bytes,
        chunks=chunks,
        seconds=round(report.seconds, 3),
        sha256=manifest.sha256,
    )
    return report


def read_backup(archive: Path, workdir: Path) -> tuple[Manifest, Path]:
    """Unpack and verify a backup into `workdir`; (manifest, database path) or BackupError."""
    try:
        tar = tarfile.open(archive, "r:")  # noqa: SIM115 - closed below
    except (OSError, tarfile.TarError) as exc:
        raise BackupError(f"{archive} is not a readable backup: {exc}") from exc
    with tar:
        try:
            members = {m.name: m for m in tar.getmembers()}
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(f"{archive} is damaged: {exc}") from exc
        if set(members) != {MANIFEST, DATABASE} or not all(m.isfile() for m in members.values()):
            raise BackupError(f"{archive} does not hold exactly {MANIFEST} and {DATABASE}")
        if members[MANIFEST].size > _MAX_MANIFEST_BYTES:
            raise BackupError(f"{archive}: manifest is implausibly large")
        manifest = Manifest.from_json(_member_bytes(tar, members[MANIFEST]))
        target = workdir / DATABASE
        digest = hashlib.sha256()
        source = tar.extractfile(members[DATABASE])
        if source is None:
            raise BackupError(f"{archive}: cannot read {DATABASE}")
        try:
            with source, target.open("wb") as out:
                while block := source.read(_CHUNK):
                    digest.update(block)
                    out.write(block)
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise BackupError(f"{archive} is damaged: {exc}") from exc
    if digest.hexdigest() != manifest.sha256 or target.stat().st_size != manifest.size:
        raise BackupError(
            f"{archive} is corrupted: the database's sha256 is {digest.hexdigest()}, "
            f"the manifest says {manifest.sha256}"
        )
    return manifest, target


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    if fh is None:
        raise BackupError(f"cannot read {member.name}")
    with fh:
        return fh.read()


def _load_vec(conn: apsw.Connection) -> None:
    import sqlite_vec

    conn.enable_load_extension(True)
    try:
        conn.load_extension(sqlite_vec.loadable_path())
    finally:
        conn.enable_load_extension(False)


def _verify_database(path: Path, manifest: Manifest) -> None:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        _load_vec(conn)  # integrity_check asks virtual tables too (SQLite >= 3.44)
        result = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            raise BackupError(f"the backed-up database fails integrity_check: {result[:3]}")
        meta = _meta(conn)
    except apsw.Error as exc:
        raise BackupError(f"the backed-up database cannot be read: {exc}") from exc
    finally:
        conn.close()
    if meta.get("embedding_identity") != manifest.embedding_identity or meta.get("dim") != str(
        manifest.dim
    ):
        raise BackupError("the backup's manifest does not match the database it carries")


def import_kb(archive: Path, kb_path: Path, *, embedding_identity: str, dim: int) -> Manifest:
    """Replace the knowledge base at `kb_path` with the backup's content (all or nothing)."""
    kb_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=kb_path.parent, prefix=".kb-import-") as tmp:
        manifest, restored = read_backup(archive, Path(tmp))
        if manifest.embedding_identity != embedding_identity or manifest.dim != dim:
            raise BackupError(
                f"refused: the backup was built with embedding model {manifest.embedding_identity}"
                f" ({manifest.dim} dimensions), this gateway is configured with "
                f"{embedding_identity} ({dim} dimensions). Their vectors cannot be mixed: "
                "configure the same kb.embedding_model as the exporting gateway, or re-ingest "
                "the documents here."
            )
        _verify_database(restored, manifest)
        source = apsw.Connection(str(restored), flags=apsw.SQLITE_OPEN_READONLY)
        dest = apsw.Connection(str(kb_path))
        try:
            dest.set_busy_timeout(10_000)
            with dest.backup("main", source, "main") as backup:
                while not backup.done:
                    backup.step(-1)
            with contextlib.suppress(apsw.Error):
                dest.execute("PRAGMA journal_mode = WAL")
        except apsw.Error as exc:
            raise BackupError(f"cannot write the knowledge base {kb_path}: {exc}") from exc
        finally:
            source.close()
            dest.close()
    log.info(
        "kb.imported",
        path=str(kb_path),
        source=str(archive),
        chunks=manifest.chunks,
        documents=manifest.documents,
    )
    return manifest
