"""The conversation turns of the question path: read before answering, written with the answer.

The bounds (`[conversation]`) are applied here and in `conversation.within_limits`; the SQL
lives in the journal, the decisions in `conversation.py`; this is the small piece of I/O glue
the question service calls.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from gateway.executor import SerialExecutor
from gateway.questions.conversation import Limits, Turn, within_limits
from gateway.questions.journal import Journal, JournalEntry, TurnRecord
from models.answer import Answer


class SharedTurns(Protocol):
    """Turns kept where every instance reads them (adapters/conversation_kv.py)."""

    async def load(self, terminal_id: str, conversation_id: str) -> list[Turn] | None: ...

    async def save(self, terminal_id: str, conversation_id: str, turns: Sequence[Turn]) -> bool: ...


class ConversationTurns:
    """`shared` is asked each time: the NATS bucket exists only once the adapter connected."""

    def __init__(
        self,
        journal: Journal,
        io: SerialExecutor,
        limits: Limits,
        shared: Callable[[], SharedTurns | None] = lambda: None,
    ) -> None:
        self._journal = journal
        self._io = io
        self.limits = limits
        self._shared = shared

    async def history(self, entry: JournalEntry, now: float) -> list[Turn]:
        """The earlier turns of the question's conversation (none for a question asked alone):
        this instance's own and the shared ones, merged by question id."""
        if entry.conversation_id is None or self.limits.max_turns == 0:
            return []
        own = await self._io.run(
            self._journal.conversation, entry.terminal_id, entry.conversation_id, self.limits, now
        )
        shared = self._shared()
        others = await shared.load(entry.terminal_id, entry.conversation_id) if shared else None
        merged = {t.question_id: t for t in [*(others or []), *own]}
        newest_first = sorted(merged.values(), key=lambda t: t.at, reverse=True)
        kept = within_limits(newest_first, self.limits, now)
        return [t for t in kept if t.question_id != entry.question_id]

    async def share(self, entry: JournalEntry, history: Sequence[Turn], record: TurnRecord) -> None:
        """Publish the conversation with its newest turn to the shared store, if there is one."""
        shared = self._shared()
        if shared is None:
            return
        turns = within_limits([record.turn, *reversed(history)], self.limits, record.turn.at)
        await shared.save(entry.terminal_id, record.conversation_id, turns)

    def record(self, entry: JournalEntry, answer: Answer) -> TurnRecord | None:
        """This answer as the conversation's newest turn, stored with the answer itself."""
        if entry.conversation_id is None or self.limits.max_turns == 0:
            return None
        turn = Turn(
            question_id=entry.question_id,
            question=entry.text,
            answer=answer.text,
            cited=cited_chunks(answer),
            at=time.time(),
        )
        return TurnRecord(entry.conversation_id, turn, keep=self.limits.max_turns)


_REFERENCE = re.compile(r"\[(\d{1,2})\]")


def cited_chunks(answer: Answer) -> tuple[int, ...]:
    """The chunks the answer's text refers to ([1], [2] ...), in the order it refers to them;
    every source's chunk when the text refers to none. A follow-up continues from what the
    technician was shown, not from every excerpt retrieval turned up."""
    chosen: list[int] = []
    for match in _REFERENCE.finditer(answer.text):
        number = int(match.group(1))
        if 1 <= number <= len(answer.sources):
            chunk = answer.sources[number - 1].chunk_id
            if chunk not in chosen:
                chosen.append(chunk)
    return tuple(chosen) if chosen else tuple(s.chunk_id for s in answer.sources)
