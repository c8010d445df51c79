"""Follow-up questions: what the earlier turns of a conversation add to a question.

A technician asks "What does E203 on P2 mean?" and then "and how do I fix it?". The second
question alone names nothing the knowledge base can find. The conversation's earlier turns
(journal.py keeps them, bounded, per terminal and conversation) supply the subject:
- the identifiers of the earlier questions (alarm codes, machine ids, part numbers), newest
  first, join the retrieval query, so the follow-up's keywords and vector both point at E203;
- the chunks the previous answer referred to, and the other candidates from their documents,
  take part in the fusion as rankings of their own, so "what should I do about it?" stays in
  the manual just shown while its own words pick the section;
- the turns go into the prompt (generative and checked modes), fenced as data like the excerpts.
Plain functions over plain data; the journal reads and writes the turns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.grounding.terms import identifiers

MAX_CARRIED_IDENTIFIERS = 6
"""More would drown the follow-up's own words in the query."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One answered question of a conversation, as kept in the journal."""

    question_id: str
    question: str
    answer: str
    cited: tuple[int, ...]
    """Chunk ids of the answer's sources, in the answer's order."""
    at: float
    """When it was answered (Unix time)."""

    @property
    def size(self) -> int:
        return len(self.question.encode()) + len(self.answer.encode())


@dataclass(frozen=True, slots=True)
class Limits:
    max_turns: int
    max_bytes: int
    max_age_s: float


NO_CONVERSATIONS = Limits(max_turns=0, max_bytes=0, max_age_s=0.0)
"""Every question answered alone (the default of the service's constructor)."""


def within_limits(newest_first: Sequence[Turn], limits: Limits, now: float) -> list[Turn]:
    """The turns a question is answered with, oldest first: none older than `max_age_s`, at
    most `max_turns`, and whole turns only, dropped oldest first, to stay within `max_bytes`."""
    kept: list[Turn] = []
    size = 0
    for turn in newest_first:
        if len(kept) >= limits.max_turns or now - turn.at > limits.max_age_s:
            break
        size += turn.size
        if size > limits.max_bytes:
            break
        kept.append(turn)
    kept.reverse()
    return kept


def carried_identifiers(text: str, history: Sequence[Turn]) -> list[str]:
    """Identifiers of the earlier questions that the follow-up does not name itself, newest
    first, as the technician spelled them. Numbers with units ("45 Nm") are left out: they
    are answers, not subjects."""
    own = identifiers(text)
    found: list[str] = []
    for turn in reversed(history):
        for spelled in _spelled(turn.question):
            key = spelled.lower()
            if key in own or key in (f.lower() for f in found):
                continue
            found.append(spelled)
            if len(found) >= MAX_CARRIED_IDENTIFIERS:
                return found
    return found


def follow_up_query(text: str, history: Sequence[Turn]) -> str:
    """The retrieval query of a question: its own words, then the subject it continues."""
    carried = carried_identifiers(text, history)
    return f"{text} ({' '.join(carried)})" if carried else text


def prior_chunks(history: Sequence[Turn]) -> list[int]:
    """The chunks the conversation cited, the latest answer's first, each once."""
    seen: list[int] = []
    for turn in reversed(history):
        for chunk in turn.cited:
            if chunk not in seen:
                seen.append(chunk)
    return seen


_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-_./][A-Za-z0-9]+)*")


def _spelled(question: str) -> list[str]:
    """The identifiers of `question` in its own spelling, in order of appearance."""
    wanted = {i for i in identifiers(question) if " " not in i}
    spelled: list[str] = []
    for match in _TOKEN.finditer(question):
        token = match.group()
        if token.lower() in wanted and token not in spelled:
            spelled.append(token)
    return spelled
