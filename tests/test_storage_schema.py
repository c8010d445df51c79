"""Schema versions of the journal and the knowledge base: migrated forward after a backup, a
newer schema refused (what a rollback onto a migrated file meets), on real SQLite files."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import apsw
import pytest

from gateway.errors import KnowledgeBaseError
from gateway.questions import journal as journal_module
from gateway.questions.journal import Journal, JournalEntry
from gateway.rag.store import KnowledgeBase
from gateway.storage_schema import SchemaTooNew, SchemaTooOld, Step, backup_path, plan


def entry(qid: str) -> JournalEntry:
    return JournalEntry(
        terminal_id="t1",
        question_id=qid,
        bus="mqtt",
        topic="edge/p/terminal/t1/question",
        reply_to="edge/p/terminal/t1/answer",
        correlation=None,
        text="What does E203 mean?",
        received_at=time.time(),
        deadline=None,
    )


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def question_ids(path: Path) -> list[str]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT question_id FROM questions ORDER BY 1")]
    finally:
        db.close()


# ---- the decision -------------------------------------------------------------------------


def test_plan_creates_opens_and_migrates(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    assert plan("journal", path, None, 2, frozenset({0, 1})).step is Step.CREATE
    assert plan("journal", path, 2, 2, frozenset({0, 1})).step is Step.OPEN
    migrate = plan("journal", path, 1, 2, frozenset({0, 1}))
    assert (migrate.step, migrate.found, migrate.target) == (Step.MIGRATE, 1, 2)


def test_plan_refuses_a_newer_schema_and_names_the_backup(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    with pytest.raises(SchemaTooNew) as no_backup:
        plan("journal", path, 3, 2, frozenset({1}))
    assert "schema 3, written by a newer edge-gateway" in no_backup.value.message
    assert ".bak" not in no_backup.value.message
    backup = backup_path(path, 2, datetime(2026, 12, 3, 18, 0, tzinfo=UTC))
    backup.write_bytes(b"")
    with pytest.raises(SchemaTooNew) as with_backup:
        plan("journal", path, 3, 2, frozenset({1}))
    assert str(backup) in with_backup.value.message
    assert backup.name == "j.sqlite3.schema2-20261203T180000Z.bak"


def test_plan_refuses_a_schema_it_cannot_migrate(tmp_path: Path) -> None:
    with pytest.raises(SchemaTooOld, match="cannot migrate"):
        plan("knowledge base", tmp_path / "kb.sqlite3", 0, 1, frozenset())


# ---- the journal --------------------------------------------------------------------------


# The journal as version 1 of the gateway wrote it (and, with user_version 0, as every gateway
# before schema versions were recorded did): frozen here, as tests/contract/v1 freezes messages.
V1_LAYOUT = """
CREATE TABLE questions (
    terminal_id TEXT NOT NULL, question_id TEXT NOT NULL, bus TEXT NOT NULL,
    topic TEXT NOT NULL, reply_to TEXT NOT NULL, correlation BLOB, text TEXT NOT NULL,
    received_at REAL NOT NULL, deadline REAL, state TEXT NOT NULL, reply_kind TEXT, reply BLOB,
    replied_at REAL, sent_at REAL, model_runs INTEGER NOT NULL DEFAULT 0,
    deliveries INTEGER NOT NULL DEFAULT 1, PRIMARY KEY (terminal_id, question_id)
) WITHOUT ROWID;
CREATE INDEX questions_state ON questions(state, received_at);
"""


def old_journal(path: Path, version: int, question_ids: list[str]) -> None:
    db = sqlite3.connect(path)
    db.executescript(V1_LAYOUT)
    for qid in question_ids:
        db.execute(
            "INSERT INTO questions (terminal_id, question_id, bus, topic, reply_to, text,"
            " received_at, state) VALUES ('t1', ?, 'mqtt', 'q', 'a', 'E203?', ?, 'pending')",
            (qid, time.time()),
        )
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


def test_a_new_journal_records_its_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    Journal(path).close()
    assert user_version(path) == journal_module.SCHEMA_VERSION == 2
    assert list(tmp_path.glob("*.bak")) == []


def test_a_version_1_journal_is_backed_up_then_migrated_to_conversations(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    old_journal(path, 1, ["q1", "q2"])
    journal = Journal(path)
    try:
        assert journal.record([entry("q1")])[0].outcome.value == "duplicate_pending"
        assert [e.question_id for e in journal.pending()] == ["q1", "q2"]
        assert journal.pending()[0].conversation_id is None
    finally:
        journal.close()
    assert user_version(path) == 2
    (backup,) = tmp_path.glob("j.sqlite3.schema1-*.bak")
    assert user_version(backup) == 1
    assert question_ids(backup) == ["q1", "q2"]


def test_an_unversioned_journal_is_backed_up_then_migrated_and_keeps_its_questions(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite3"
    old_journal(path, 0, ["q1", "q2"])  # as gateways before schema versions left it

    journal = Journal(path)
    try:
        assert journal.record([entry("q1")])[0].outcome.value == "duplicate_pending"
    finally:
        journal.close()
    assert user_version(path) == 2
    backups = sorted(tmp_path.glob("j.sqlite3.schema0-*.bak"))
    assert len(backups) == 1
    assert user_version(backups[0]) == 0
    assert question_ids(backups[0]) == ["q1", "q2"]
    assert question_ids(path) == ["q1", "q2"]


def test_a_journal_of_a_newer_schema_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    journal.record([entry("q1")])
    journal.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 3")  # as a newer gateway would leave it
    db.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew, match="has schema 3, written by a newer edge-gateway"):
        Journal(path)
    assert user_version(path) == 3
    assert path.read_bytes() == before
    assert question_ids(path) == ["q1"]


# ---- the knowledge base -------------------------------------------------------------------


def test_a_knowledge_base_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kb.sqlite3"
    KnowledgeBase.open(path, dim=4, embedding_identity="m").close()
    conn = apsw.Connection(str(path))
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    conn.close()
    with pytest.raises(KnowledgeBaseError, match="has schema 2, written by a newer edge-gateway"):
        KnowledgeBase.open(path, dim=4, embedding_identity="m")
    # The same file back at schema 1 opens: the refusal was the version, not the file.
    conn = apsw.Connection(str(path))
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    conn.close()
    KnowledgeBase.open(path, dim=4, embedding_identity="m").close()
