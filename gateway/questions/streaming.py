"""Partial answers: the best quote at once, then the answer text in sequence-numbered pieces.

A technician staring at a silent screen for seconds assumes the box is broken; the first words
after a few hundred milliseconds say it is not. Partials are a courtesy, never a promise:
- QoS 0, published without waiting for anything, from the token callback itself, so the answer
  path never waits for the bus;
- a bus that cannot take them (disconnected, or its backlog of unsent partials is full) does not
  queue them: the text stays here and goes out with the next piece, so a slow bus gets fewer,
  larger pieces, and memory is bounded by the answer's own length;
- the final Answer (QoS 1, journaled) is sent afterwards as always and is the authoritative one.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.bus import BusAdapter
from gateway.logging import get_logger
from gateway.questions.journal import JournalEntry
from models.answer import PartialAnswer, Source

log = get_logger(__name__)

Publish = Callable[[bytes], bool]
"""Hands one encoded partial to the bus; False when it was not taken."""


class PartialStream:
    """The `on_token` callback of one generation, plus the bookkeeping of what was sent."""

    def __init__(self, publish: Publish, *, question_id: str, terminal_id: str) -> None:
        self._publish = publish
        self._question_id = question_id
        self._terminal_id = terminal_id
        self._pending = ""
        self.sent = 0
        self.merged = 0
        """Times a piece could not be sent and was merged into the next one."""
        self.chars_sent = 0

    def quote(self, source: Source) -> None:
        """The manual's best lines, right after retrieval and before any model token: what a
        technician reads while the rest is made. Not merged into later text when the bus does
        not take it: the final answer carries the same quote in its sources."""
        payload = (
            PartialAnswer(
                question_id=self._question_id,
                terminal_id=self._terminal_id,
                seq=self.sent,
                text=source.quote,
                stage="quote",
                source=source,
            )
            .model_dump_json()
            .encode()
        )
        if self._try(payload):
            self.sent += 1

    def on_token(self, text: str) -> None:
        self._pending += text
        self._flush()

    def finish(self) -> None:
        """Last try for text still held back; whatever the bus does not take, the final answer
        carries anyway."""
        self._flush()
        log.debug(
            "answer.streamed",
            question_id=self._question_id,
            terminal_id=self._terminal_id,
            partials=self.sent,
            merged=self.merged,
            unsent_chars=len(self._pending),
        )

    def _flush(self) -> None:
        if not self._pending:
            return
        payload = (
            PartialAnswer(
                question_id=self._question_id,
                terminal_id=self._terminal_id,
                seq=self.sent,
                text=self._pending[:32_768],
            )
            .model_dump_json()
            .encode()
        )
        if self._try(payload):
            self.sent += 1
            self.chars_sent += len(self._pending)
            self._pending = ""
        else:
            self.merged += 1

    def _try(self, payload: bytes) -> bool:
        try:
            return self._publish(payload)
        except Exception as exc:  # a courtesy must never fail the answer
            log.warning("answer.partial_failed", question_id=self._question_id, error=repr(exc))
            return False


def partial_stream(adapter: BusAdapter | None, entry: JournalEntry) -> PartialStream | None:
    """Partials for this question, if it asked for them and its bus is here."""
    if not entry.stream or adapter is None:
        return None
    topic = adapter.partial_topic(entry.terminal_id, entry.reply_to)
    correlation = entry.correlation

    def publish(payload: bytes) -> bool:
        return adapter.publish_partial(topic, payload, correlation_data=correlation)

    return PartialStream(publish, question_id=entry.question_id, terminal_id=entry.terminal_id)
