"""The journal's state machine, on a real SQLite file."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from gateway.questions.journal import Journal, JournalEntry, QuestionState, RecordOutcome


def entry(qid: str, terminal: str = "t1") -> JournalEntry:
    return JournalEntry(
        terminal_id=terminal,
        question_id=qid,
        bus="mqtt",
        topic=f"edge/p/terminal/{terminal}/question",
        reply_to=f"edge/p/terminal/{terminal}/answer",
        correlation=b"\x00corr",
        text="What does E203 mean?",
        received_at=time.time(),
        deadline=None,
    )


def test_new_duplicate_pending_and_answered(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    first, again = journal.record([entry("q1"), entry("q1")])
    assert first.outcome == RecordOutcome.NEW
    assert again.outcome == RecordOutcome.DUPLICATE_PENDING
    journal.record_reply("t1", "q1", kind="answer", payload=b'{"a":1}')
    (dup,) = journal.record([entry("q1")])
    assert dup.outcome == RecordOutcome.DUPLICATE_ANSWERED
    assert dup.reply is not None
    assert dup.reply.payload == b'{"a":1}'
    assert dup.reply.state == QuestionState.ANSWERED


def test_same_id_from_another_terminal_is_another_question(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    outcomes = journal.record([entry("q1", "t1"), entry("q1", "t2")])
    assert [o.outcome for o in outcomes] == [RecordOutcome.NEW, RecordOutcome.NEW]


def test_refused_question_is_processed_afresh(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    journal.record([entry("q1")])
    journal.record_reply("t1", "q1", kind="error", payload=b"busy", final=False)
    (again,) = journal.record([entry("q1")])
    assert again.outcome == RecordOutcome.NEW


def test_pending_and_unsent_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = Journal(path)
    journal.record([entry("q1"), entry("q2"), entry("q3")])
    journal.record_reply("t1", "q2", kind="answer", payload=b"a2")
    journal.record_reply("t1", "q3", kind="answer", payload=b"a3")
    journal.mark_sent("t1", "q3")
    journal.close()

    reopened = Journal(path)
    assert [e.question_id for e in reopened.pending()] == ["q1"]
    assert reopened.pending()[0].correlation == b"\x00corr"
    assert [(e.question_id, p) for e, p in reopened.unsent()] == [("q2", b"a2")]
    assert reopened.counts() == {"pending": 1, "answered": 1, "sent": 1}
    assert reopened.integrity_ok()


def test_model_runs_are_counted(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    journal.record([entry("q1")])
    assert journal.note_model_run("t1", "q1") == 1
    assert journal.note_model_run("t1", "q1") == 2
    assert journal.model_runs("t1", "q1") == 2


def test_purge_forgets_only_settled_old_questions(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    journal.record([entry("old"), entry("pending")])
    journal.record_reply("t1", "old", kind="answer", payload=b"x")
    journal.mark_sent("t1", "old")
    assert journal.purge(time.time() + 1) == 1
    assert [e.question_id for e in journal.pending()] == ["pending"]


def test_released_question_is_recorded_afresh_and_keeps_its_model_runs(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    journal.record([entry("q1"), entry("q2")])
    journal.note_model_run("t1", "q1")  # the run a crash interrupted
    assert journal.release_pending(["nats"]) == 0  # another bus's questions stay pending
    assert journal.release_pending(["mqtt"]) == 2
    assert journal.pending() == []
    (again,) = journal.record([entry("q1")])
    assert again.outcome == RecordOutcome.NEW
    assert journal.model_runs("t1", "q1") == 1
    assert journal.counts() == {"pending": 1, "released": 1}
    assert journal.purge(time.time() + 1) == 1  # released rows are forgotten like settled ones


def unnamed(received_at: float, qid: str = "h-abc") -> JournalEntry:
    base = entry(qid)
    return JournalEntry(
        terminal_id=base.terminal_id,
        question_id=qid,
        bus=base.bus,
        topic=base.topic,
        reply_to=base.reply_to,
        correlation=None,
        text=base.text,
        received_at=received_at,
        deadline=None,
        named=False,
    )


def test_a_question_without_id_asked_again_after_the_window_is_answered_afresh(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j.sqlite3", unnamed_dedup_s=300.0)
    asked = 1_000_000.0
    (first,) = journal.record([unnamed(asked)])
    assert first.outcome == RecordOutcome.NEW
    journal.record_reply("t1", "h-abc", kind="answer", payload=b'{"old":1}')
    (redelivered,) = journal.record([unnamed(asked + 299.0)])
    assert redelivered.outcome == RecordOutcome.DUPLICATE_ANSWERED, "a redelivery collapses"
    (tomorrow,) = journal.record([unnamed(asked + 86_400.0)])
    assert tomorrow.outcome == RecordOutcome.NEW, "the same text tomorrow is a new question"
    (again,) = journal.record([unnamed(asked + 86_401.0)])
    assert again.outcome == RecordOutcome.DUPLICATE_PENDING, "and its own redelivery collapses"


def test_a_question_with_its_own_id_stays_deduplicated_for_the_retention(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3", unnamed_dedup_s=300.0)
    (first,) = journal.record([entry("q-own")])
    assert first.outcome == RecordOutcome.NEW
    journal.record_reply("t1", "q-own", kind="answer", payload=b'{"a":1}')
    later = entry("q-own")
    tomorrow = dataclasses.replace(later, received_at=later.received_at + 86_400.0)
    (dup,) = journal.record([tomorrow])
    assert dup.outcome == RecordOutcome.DUPLICATE_ANSWERED
