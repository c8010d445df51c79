"""Screening one inbound message: a journal entry to record, or a refusal to answer.

Plain logic over the envelope and the adapter's topic rules, no I/O: the service decides what to
do with the verdict (record and acknowledge, or answer the error and acknowledge). Where the
error goes matters as much as the error: an invalid Response Topic is never written to; the
refusal then goes to the terminal's own answer topic.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.bus import BusAdapter, InboundMessage, ReplyAddress
from gateway.config import LimitsConfig
from gateway.questions.intake import IntakeError, decode_question, is_identifier, question_key
from gateway.questions.journal import JournalEntry
from models.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class Accepted:
    inbound: InboundMessage
    entry: JournalEntry


@dataclass(frozen=True, slots=True)
class Refused:
    to: ReplyAddress
    terminal_id: str
    error: IntakeError


@dataclass(frozen=True, slots=True)
class Unroutable:
    """The topic names no valid terminal: there is nobody to answer."""


Screened = Accepted | Refused | Unroutable


def screen(
    inbound: InboundMessage,
    adapter: BusAdapter,
    limits: LimitsConfig,
    streaming_terminals: frozenset[str],
) -> Screened:
    terminal = inbound.terminal_id
    if terminal is None or not is_identifier(terminal):
        return Unroutable()
    own = ReplyAddress(inbound.bus, adapter.answer_topic(terminal), inbound.correlation_data)
    decoded = decode_question(
        inbound.payload, max_bytes=limits.max_payload_bytes, max_depth=limits.max_json_depth
    )
    requested = inbound.response_topic
    reply_ok = requested is None or adapter.reply_allowed(terminal, requested)
    if isinstance(decoded, IntakeError):
        to = (
            own
            if not reply_ok or requested is None
            else ReplyAddress(inbound.bus, requested, inbound.correlation_data)
        )
        return Refused(to, terminal, decoded)
    key = question_key(
        decoded,
        message_id=inbound.message_id,
        correlation_data=inbound.correlation_data,
        payload=inbound.payload,
    )
    if not reply_ok:
        return Refused(
            own,
            terminal,
            IntakeError(
                ErrorCode.FORBIDDEN_RESPONSE_TOPIC,
                "the response topic must be the terminal's own answer topic or below it: "
                f"{adapter.answer_topic(terminal)}",
                question_id=key,
            ),
        )
    entry = JournalEntry(
        terminal_id=terminal,
        question_id=key,
        bus=inbound.bus,
        topic=inbound.topic,
        reply_to=requested or own.topic,
        correlation=inbound.correlation_data,
        text=decoded.text,
        received_at=inbound.received_at,
        deadline=(inbound.received_at + inbound.expiry_s) if inbound.expiry_s else None,
        stream=decoded.stream or terminal in streaming_terminals,
        conversation_id=decoded.conversation_id,
        named=decoded.id is not None
        or (inbound.message_id is not None and is_identifier(inbound.message_id)),
    )
    return Accepted(inbound, entry)
