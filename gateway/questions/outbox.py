"""The outbox: every reply is stored, then published, then marked sent, then its inbound
copies are settled with the broker.

A crash anywhere in that order leaves a state `QuestionService.recover` fixes: a stored reply
that was not marked sent is published again at start, byte for byte. Duplicates of a question in
progress are held here (`hold`) and settled together when its reply is out, so a broker never
redelivers a question whose answer the terminal already has, nor forgets one it does not.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from gateway.bus import BusAdapter, InboundMessage, ReplyAddress
from gateway.executor import SerialExecutor
from gateway.logging import get_logger
from gateway.questions.journal import Journal, JournalEntry, TurnRecord
from models.errors import ErrorCode, ErrorReply

log = get_logger(__name__)

Key = tuple[str, str]
"""(terminal id, question id): the journal's single id space, the same on every bus."""


def error_reply(
    *, terminal_id: str, question_id: str | None, code: ErrorCode, message: str, retryable: bool
) -> bytes:
    return (
        ErrorReply(
            question_id=question_id,
            terminal_id=terminal_id,
            code=code,
            message=message[:1024],
            retryable=retryable,
            sent_at=datetime.now(UTC),
        )
        .model_dump_json()
        .encode()
    )


class Outbox:
    """Publishes replies on the bus their question came from, and settles the inbound copies."""

    def __init__(
        self, adapters: Mapping[str, BusAdapter], journal: Journal, journal_io: SerialExecutor
    ) -> None:
        self._adapters = adapters
        self._journal = journal
        self._io = journal_io
        self._unsettled: dict[Key, list[InboundMessage]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def hold(self, entry: JournalEntry, inbound: InboundMessage) -> None:
        """Keep `inbound` unsettled until the reply to `entry` is out."""
        self._unsettled.setdefault((entry.terminal_id, entry.question_id), []).append(inbound)

    async def deliver(
        self,
        entry: JournalEntry,
        kind: Literal["answer", "error"],
        payload: bytes,
        *,
        final: bool,
        turn: TurnRecord | None = None,
    ) -> None:
        """Store, then publish, then mark sent: a crash anywhere leaves a state `recover` fixes."""
        await self._io.run(
            functools.partial(
                self._journal.record_reply,
                entry.terminal_id,
                entry.question_id,
                kind=kind,
                payload=payload,
                final=final,
                turn=turn,
            )
        )
        sent = await self.send(
            ReplyAddress(entry.bus, entry.reply_to, entry.correlation),
            payload,
            question_id=entry.question_id,
            terminal_id=entry.terminal_id,
        )
        if sent and final:
            await self._io.run(self._journal.mark_sent, entry.terminal_id, entry.question_id)
        await self.settle(entry, delivered=sent)

    async def publish_stored(self, entry: JournalEntry, payload: bytes) -> None:
        sent = await self.send(
            ReplyAddress(entry.bus, entry.reply_to, entry.correlation),
            payload,
            question_id=entry.question_id,
            terminal_id=entry.terminal_id,
        )
        if sent:
            await self._io.run(self._journal.mark_sent, entry.terminal_id, entry.question_id)
        await self.settle(entry, delivered=sent)

    async def settle(self, entry: JournalEntry, *, delivered: bool) -> None:
        """Settle every copy of this question that is waiting for its reply."""
        for inbound in self._unsettled.pop((entry.terminal_id, entry.question_id), []):
            await settle_one(inbound, delivered=delivered)

    async def send(
        self, to: ReplyAddress, payload: bytes, *, question_id: str | None, terminal_id: str
    ) -> bool:
        adapter = self._adapters.get(to.bus)
        if adapter is None:
            log.error("reply.no_adapter", bus=to.bus, question_id=question_id)
            return False
        try:
            await adapter.publish(to.topic, payload, correlation_data=to.correlation_data)
        except Exception as exc:
            log.error(
                "reply.publish_failed",
                error=str(exc),
                topic=to.topic,
                question_id=question_id,
                terminal_id=terminal_id,
            )
            return False
        return True

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a reply on its own task, kept referenced until done (the loop holds tasks weakly)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_task_error)

    async def wait_background(self, timeout_s: float) -> None:
        """Let refusals and busy replies in flight out (bounded)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, timeout_s))


async def settle_one(inbound: InboundMessage, *, delivered: bool) -> None:
    """Settling is the adapter's business; its failure must not stop the question path."""
    try:
        await inbound.settle(delivered)
    except Exception as exc:
        log.warning(
            "question.settle_failed",
            error=str(exc),
            bus=inbound.bus,
            topic=inbound.topic,
            terminal_id=inbound.terminal_id,
            message_id=inbound.message_id,
        )


def _log_task_error(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        structlog.get_logger(__name__).error("task.failed", error=str(task.exception()))
