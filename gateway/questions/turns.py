"""The conversation turns of the question path: read before answering, written with the answer.

The bounds (`[conversation]`) are applied here and in `conversation.within_limits`; the SQL
lives in the journal, the decisions in `conversation.py`; this is the small piece of I/O glue
the question service calls.
"""

from __future__ import annotations

import re
import time

from gateway.executor import SerialExecutor
from gateway.questions.conversation import Limits, Turn
from gateway.questions.journal import Journal, JournalEntry, TurnRecord
from models.answer import Answer


class ConversationTurns:
    def __init__(self, journal: Journal, io: SerialExecutor, limits: Limits) -> None:
        self._journal = journal
        self._io = io
        self.limits = limits

    async def history(self, entry: JournalEntry, now: float) -> list[Turn]:
        """The earlier turns of the question's conversation (none for a question asked alone)."""
        if entry.conversation_id is None or self.limits.max_turns == 0:
            return []
        turns = await self._io.run(
            self._journal.conversation, entry.terminal_id, entry.conversation_id, self.limits, now
        )
        return [t for t in turns if t.question_id != entry.question_id]

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
