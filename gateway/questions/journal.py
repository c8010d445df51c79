"""The journal: every question is on disk before the broker hears our acknowledgement.

One SQLite file in WAL mode. A question row goes through `pending` -> `answered` (reply stored,
not yet confirmed by the broker) -> `sent` (the broker acknowledged the reply). A retryable
refusal (busy, worker failure) is stored as `refused`, so the same id asked again is processed
afresh instead of replaying the refusal. A question left `pending` by a crash on a bus whose
broker redelivers it (JetStream) is `released` at start: the broker may hand it to another
instance, and if it comes back here it is recorded afresh (its `model_runs` are kept). Rows are
keyed by (terminal, question id): a redelivered or duplicated question finds its row and is
answered from it, never by running the model again.

Writes are batched (group commit): the intake hands over everything that arrived since the last
commit, so one fsync covers a burst. All methods are synchronous and must be called from one
thread; `gateway.executor.SerialExecutor` provides that thread to the event loop.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from gateway.questions.conversation import Limits, Turn, within_limits
from gateway.storage_schema import Step, backup_path, plan

TURNS = """
CREATE TABLE IF NOT EXISTS turns (
    terminal_id     TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    question_id     TEXT NOT NULL,
    question        TEXT NOT NULL,
    answer          TEXT NOT NULL,
    cited           TEXT NOT NULL,
    at              REAL NOT NULL,
    PRIMARY KEY (terminal_id, conversation_id, question_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS turns_by_time ON turns(terminal_id, conversation_id, at);
"""
SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS questions (
    terminal_id     TEXT NOT NULL,
    question_id     TEXT NOT NULL,
    bus             TEXT NOT NULL,
    topic           TEXT NOT NULL,
    reply_to        TEXT NOT NULL,
    correlation     BLOB,
    text            TEXT NOT NULL,
    received_at     REAL NOT NULL,
    deadline        REAL,
    state           TEXT NOT NULL,
    reply_kind      TEXT,
    reply           BLOB,
    replied_at      REAL,
    sent_at         REAL,
    model_runs      INTEGER NOT NULL DEFAULT 0,
    deliveries      INTEGER NOT NULL DEFAULT 1,
    conversation_id TEXT,
    PRIMARY KEY (terminal_id, question_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS questions_state ON questions(state, received_at);
"""
    + TURNS
)
SCHEMA_VERSION = 2
"""Recorded in the file's `PRAGMA user_version` (gateway/storage_schema.py)."""
MIGRATIONS: dict[int, str] = {
    # Journals written before the version was recorded (user_version 0) have version 1's layout.
    0: "",
    # 2: conversations (a question's conversation_id, and the turns kept per conversation).
    1: "ALTER TABLE questions ADD COLUMN conversation_id TEXT;" + TURNS,
}
"""from-version -> the SQL taking a journal one version forward."""


class QuestionState(StrEnum):
    PENDING = "pending"
    ANSWERED = "answered"
    SENT = "sent"
    REFUSED = "refused"
    RELEASED = "released"


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """A question as the journal knows it; enough to answer it after a restart."""

    terminal_id: str
    question_id: str
    bus: str
    topic: str
    reply_to: str
    correlation: bytes | None
    text: str
    received_at: float
    deadline: float | None
    stream: bool = False
    """Send partial answers. Not stored: a question answered after a restart gets none."""
    conversation_id: str | None = None
    """The conversation this question continues (gateway/questions/conversation.py)."""
    named: bool = True
    """The id is the terminal's own (or the bus's message id). False when the gateway derived
    it from the payload or correlation data: the same text asked again is then a new question
    once the redelivery window (`unnamed_dedup_s`) has passed."""


@dataclass(frozen=True, slots=True)
class StoredReply:
    kind: Literal["answer", "error"]
    payload: bytes
    state: QuestionState


class RecordOutcome(StrEnum):
    NEW = "new"
    DUPLICATE_PENDING = "duplicate_pending"
    DUPLICATE_ANSWERED = "duplicate_answered"


@dataclass(frozen=True, slots=True)
class Recorded:
    outcome: RecordOutcome
    reply: StoredReply | None = None


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """A turn to store with its answer, and how many turns its conversation keeps."""

    conversation_id: str
    turn: Turn
    keep: int


class Journal:
    """Synchronous journal; see the module docstring for the state machine."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        unnamed_dedup_s: float = 300.0,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.unnamed_dedup_s = unnamed_dedup_s
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        """Create, open or migrate (after a backup) the file; refuse a newer schema."""
        found: int | None = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if (
            found == 0
            and not self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'questions'"
            ).fetchone()
        ):
            found = None
        step = plan("journal", self.path, found, SCHEMA_VERSION, frozenset(MIGRATIONS))
        if step.step is Step.OPEN:
            return
        if step.step is Step.MIGRATE and step.found is not None:
            backup = sqlite3.connect(backup_path(self.path, step.found))
            try:
                self._db.backup(backup)
            finally:
                backup.close()
        with self._transaction():
            if step.step is Step.CREATE:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            else:
                for version in range(step.found or 0, SCHEMA_VERSION):
                    for statement in MIGRATIONS[version].split(";"):
                        if statement.strip():
                            self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    def _transaction(self) -> _Tx:
        return _Tx(self._db)

    def record(self, entries: Sequence[JournalEntry]) -> list[Recorded]:
        """Record a batch of questions in one transaction (one fsync) and classify each."""
        results: list[Recorded] = []
        with self._transaction():
            for entry in entries:
                results.append(self._record_one(entry))
        return results

    def _record_one(self, e: JournalEntry) -> Recorded:
        row = self._db.execute(
            "SELECT state, reply_kind, reply, received_at FROM questions"
            " WHERE terminal_id=? AND question_id=?",
            (e.terminal_id, e.question_id),
        ).fetchone()
        if row is None or self._asked_afresh(e, QuestionState(row[0]), float(row[3])):
            # An upsert, not INSERT OR REPLACE: model_runs and deliveries survive a retry, so
            # "how often did the model run for this id" stays true across refusals and crashes.
            self._db.execute(
                "INSERT INTO questions (terminal_id, question_id, bus, topic, reply_to,"
                " correlation, text, received_at, deadline, state, conversation_id)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (terminal_id, question_id) DO UPDATE SET bus=excluded.bus,"
                " topic=excluded.topic, reply_to=excluded.reply_to,"
                " correlation=excluded.correlation, text=excluded.text,"
                " received_at=excluded.received_at, deadline=excluded.deadline,"
                " conversation_id=excluded.conversation_id,"
                " state=excluded.state, reply_kind=NULL, reply=NULL, replied_at=NULL,"
                " sent_at=NULL, deliveries=deliveries + 1",
                (
                    e.terminal_id,
                    e.question_id,
                    e.bus,
                    e.topic,
                    e.reply_to,
                    e.correlation,
                    e.text,
                    e.received_at,
                    e.deadline,
                    QuestionState.PENDING,
                    e.conversation_id,
                ),
            )
            return Recorded(RecordOutcome.NEW)
        self._db.execute(
            "UPDATE questions SET deliveries = deliveries + 1"
            " WHERE terminal_id=? AND question_id=?",
            (e.terminal_id, e.question_id),
        )
        state = QuestionState(row[0])
        if state == QuestionState.PENDING:
            return Recorded(RecordOutcome.DUPLICATE_PENDING)
        return Recorded(RecordOutcome.DUPLICATE_ANSWERED, StoredReply(row[1], bytes(row[2]), state))

    def _asked_afresh(self, e: JournalEntry, state: QuestionState, received_at: float) -> bool:
        """Whether a known id is a new question rather than a redelivery: after a refusal or a
        release, and for an id derived from the payload once the redelivery window has passed
        (the same text tomorrow, after the manual changed, deserves today's answer)."""
        if state in (QuestionState.REFUSED, QuestionState.RELEASED):
            return True
        settled = state in (QuestionState.ANSWERED, QuestionState.SENT)
        return settled and not e.named and e.received_at - received_at > self.unnamed_dedup_s

    def note_model_run(self, terminal_id: str, question_id: str) -> int:
        """Count a model run before it starts, so a crash mid-run is still counted."""
        with self._transaction():
            self._db.execute(
                "UPDATE questions SET model_runs = model_runs + 1"
                " WHERE terminal_id=? AND question_id=?",
                (terminal_id, question_id),
            )
            row = self._db.execute(
                "SELECT model_runs FROM questions WHERE terminal_id=? AND question_id=?",
                (terminal_id, question_id),
            ).fetchone()
        return int(row[0]) if row else 0

    def record_reply(
        self,
        terminal_id: str,
        question_id: str,
        *,
        kind: Literal["answer", "error"],
        payload: bytes,
        final: bool = True,
        turn: TurnRecord | None = None,
    ) -> None:
        """Store the reply before it is published; a non-final (retryable) reply frees the id.

        An answer in a conversation stores its turn in the same transaction, so a crash never
        leaves an answer the conversation does not know, nor a turn without its answer; only the
        newest `keep` turns of the conversation stay."""
        state = QuestionState.ANSWERED if final else QuestionState.REFUSED
        with self._transaction():
            self._db.execute(
                "UPDATE questions SET state=?, reply_kind=?, reply=?, replied_at=?"
                " WHERE terminal_id=? AND question_id=?",
                (state, kind, payload, time.time(), terminal_id, question_id),
            )
            if turn is not None:
                self._store_turn(terminal_id, turn)

    def _store_turn(self, terminal_id: str, record: TurnRecord) -> None:
        t = record.turn
        self._db.execute(
            "INSERT OR REPLACE INTO turns (terminal_id, conversation_id, question_id, question,"
            " answer, cited, at) VALUES (?,?,?,?,?,?,?)",
            (terminal_id, record.conversation_id, t.question_id, t.question, t.answer,
             json.dumps(list(t.cited)), t.at),
        )  # fmt: skip
        self._db.execute(
            "DELETE FROM turns WHERE terminal_id=? AND conversation_id=? AND question_id NOT IN"
            " (SELECT question_id FROM turns WHERE terminal_id=? AND conversation_id=?"
            "  ORDER BY at DESC LIMIT ?)",
            (terminal_id, record.conversation_id, terminal_id, record.conversation_id,
             record.keep),
        )  # fmt: skip

    def conversation(
        self, terminal_id: str, conversation_id: str, limits: Limits, now: float
    ) -> list[Turn]:
        """The turns a question of this conversation is answered with, oldest first (see
        `conversation.within_limits`). Keyed by the terminal taken from the topic or subject:
        another terminal naming the same conversation id reads nothing of it."""
        rows = self._db.execute(
            "SELECT question_id, question, answer, cited, at FROM turns"
            " WHERE terminal_id=? AND conversation_id=? ORDER BY at DESC LIMIT ?",
            (terminal_id, conversation_id, limits.max_turns),
        ).fetchall()
        newest_first = [
            Turn(str(q), str(text), str(a), tuple(int(c) for c in json.loads(cited)), float(at))
            for q, text, a, cited, at in rows
        ]
        return within_limits(newest_first, limits, now)

    def mark_sent(self, terminal_id: str, question_id: str) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE questions SET state=?, sent_at=? WHERE terminal_id=? AND question_id=?"
                " AND state=?",
                (QuestionState.SENT, time.time(), terminal_id, question_id, QuestionState.ANSWERED),
            )

    def pending(self) -> list[JournalEntry]:
        """Questions recorded but never answered (e.g. the gateway died): answer them at start."""
        rows = self._db.execute(
            "SELECT terminal_id, question_id, bus, topic, reply_to, correlation, text,"
            " received_at, deadline, conversation_id FROM questions WHERE state=?"
            " ORDER BY received_at",
            (QuestionState.PENDING,),
        ).fetchall()
        return [_entry(row) for row in rows]

    def release_pending(self, buses: Sequence[str]) -> int:
        """Hand pending questions of these buses back to their broker (see the module docstring)."""
        if not buses:
            return 0
        marks = ",".join("?" * len(buses))
        with self._transaction():
            cursor = self._db.execute(
                f"UPDATE questions SET state=? WHERE state=? AND bus IN ({marks})",  # noqa: S608
                (QuestionState.RELEASED, QuestionState.PENDING, *buses),
            )
        return cursor.rowcount

    def unsent(self) -> list[tuple[JournalEntry, bytes]]:
        """Replies stored but not confirmed by the broker: publish them again at start."""
        rows = self._db.execute(
            "SELECT terminal_id, question_id, bus, topic, reply_to, correlation, text,"
            " received_at, deadline, conversation_id, reply FROM questions WHERE state=?"
            " ORDER BY received_at",
            (QuestionState.ANSWERED,),
        ).fetchall()
        return [(_entry(row[:10]), bytes(row[10])) for row in rows]

    def model_runs(self, terminal_id: str, question_id: str) -> int:
        row = self._db.execute(
            "SELECT model_runs FROM questions WHERE terminal_id=? AND question_id=?",
            (terminal_id, question_id),
        ).fetchone()
        return int(row[0]) if row else 0

    def counts(self) -> dict[str, int]:
        return {
            str(state): int(n)
            for state, n in self._db.execute("SELECT state, COUNT(*) FROM questions GROUP BY state")
        }

    def purge(self, older_than: float) -> int:
        """Forget settled questions older than the retention window (dedupe horizon)."""
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM questions WHERE state IN (?, ?, ?) AND received_at < ?",
                (QuestionState.SENT, QuestionState.REFUSED, QuestionState.RELEASED, older_than),
            )
            self._db.execute("DELETE FROM turns WHERE at < ?", (older_than,))
        return cursor.rowcount

    def integrity_ok(self) -> bool:
        row = self._db.execute("PRAGMA integrity_check").fetchone()
        return bool(row and row[0] == "ok")


def _entry(row: Sequence[object]) -> JournalEntry:
    correlation = row[5]
    return JournalEntry(
        terminal_id=str(row[0]),
        question_id=str(row[1]),
        bus=str(row[2]),
        topic=str(row[3]),
        reply_to=str(row[4]),
        correlation=bytes(correlation) if isinstance(correlation, bytes | bytearray) else None,
        text=str(row[6]),
        received_at=float(row[7]),  # type: ignore[arg-type]
        deadline=float(row[8]) if row[8] is not None else None,  # type: ignore[arg-type]
        conversation_id=str(row[9]) if row[9] is not None else None,
    )


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
