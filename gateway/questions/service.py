"""The question path: intake -> journal -> queue -> answer -> outbox.

Delivery rules (issue 2, DESIGN.md "delivery traps"):
- a question is acknowledged to the broker only after the journal has it (group commit);
- a duplicate never reaches the model: a pending one is ignored (it will be answered), an
  answered one gets its stored reply again, byte for byte;
- a reply is stored before it is published and is `sent` only once the broker acknowledged it;
- at start, stored-but-unsent replies are published again and pending questions are answered,
  except on buses whose broker redelivers unsettled questions (JetStream): those are released
  to the broker, which may give them to another instance;
- every accepted or refused inbound message is settled once its reply is published (or failed):
  duplicates of a question in progress wait for its reply (see `InboundMessage.settle`).
Bad input is answered with an ErrorReply on the asker's own topic, logged and counted.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping

from gateway.bus import BusAdapter, InboundMessage
from gateway.config import LimitsConfig
from gateway.errors import GatewayError, WorkerUnavailable
from gateway.executor import SerialExecutor
from gateway.logging import get_logger
from gateway.questions.answering import Answerer
from gateway.questions.answers import QuestionContext, fallback_answer
from gateway.questions.conversation import NO_CONVERSATIONS, Limits
from gateway.questions.journal import Journal, JournalEntry, Recorded, RecordOutcome
from gateway.questions.metrics import Metrics
from gateway.questions.outbox import Outbox, error_reply, settle_one
from gateway.questions.ratelimit import RateLimiter
from gateway.questions.screening import Accepted, Refused, screen
from gateway.questions.streaming import partial_stream
from gateway.questions.turns import ConversationTurns, SharedTurns
from gateway.worker.scheduler import Lane, PriorityScheduler
from models.errors import ErrorCode

log = get_logger(__name__)

INTAKE_BATCH = 256
JOURNAL_RETRY_MIN_S = 0.25
JOURNAL_RETRY_MAX_S = 5.0


class QuestionService:
    """Owns the question queue and the single answering task (one model worker)."""

    def __init__(
        self,
        *,
        adapters: Mapping[str, BusAdapter],
        journal: Journal,
        journal_io: SerialExecutor,
        answerer: Answerer,
        limits: LimitsConfig,
        queue_capacity: int,
        metrics: Metrics,
        scheduler: PriorityScheduler | None = None,
        streaming_terminals: frozenset[str] = frozenset(),
        conversation: Limits = NO_CONVERSATIONS,
        shared_turns: Callable[[], SharedTurns | None] = lambda: None,
    ) -> None:
        self._adapters = adapters
        self._turns = ConversationTurns(journal, journal_io, conversation, shared_turns)
        self._journal = journal
        self._io = journal_io
        self._answerer = answerer
        self._limits = limits
        self._streaming_terminals = streaming_terminals
        self.metrics = metrics
        self.queue_capacity = queue_capacity
        self._intake: asyncio.Queue[InboundMessage] = asyncio.Queue()
        # Shared with the diagnosis path: one worker, one queue with lanes
        # (gateway/worker/scheduler.py).
        self._work = scheduler or PriorityScheduler()
        self._queued = 0
        self._rate = (
            RateLimiter(
                per_minute=limits.questions_per_minute,
                burst=limits.question_burst,
                max_delay_s=0.0,
                max_keys=limits.max_terminals,
            )
            if limits.questions_per_minute > 0
            else None
        )
        self._outbox = Outbox(adapters, journal, journal_io)
        self._accepting = True
        self._idle = asyncio.Event()
        self._idle.set()

    # ---- entry points -----------------------------------------------------------------------

    def on_message(self, inbound: InboundMessage) -> None:
        """Adapter callback (on the loop): never blocks, never raises."""
        if not self._accepting:
            return  # not acknowledged: redelivered to the next session
        self._intake.put_nowait(inbound)

    @property
    def queue_depth(self) -> int:
        return self._queued

    def stop_accepting(self) -> None:
        self._accepting = False

    async def recover(self) -> None:
        """Republish stored-but-unsent replies and queue questions that were never answered."""
        unsent = await self._io.run(self._journal.unsent)
        for entry, payload in unsent:
            await self._outbox.publish_stored(entry, payload)
        redelivering = [name for name, a in self._adapters.items() if a.broker_redelivers]
        released = await self._io.run(self._journal.release_pending, redelivering)
        pending = await self._io.run(self._journal.pending)
        for entry in pending:
            self._enqueue(entry, force=True)
        if unsent or pending or released:
            log.info(
                "journal.recovered",
                republished=len(unsent),
                requeued=len(pending),
                released_to_broker=released,
            )

    async def run_intake(self) -> None:
        while True:
            batch = [await self._intake.get()]
            while len(batch) < INTAKE_BATCH and not self._intake.empty():
                batch.append(self._intake.get_nowait())
            try:
                await self._intake_batch(batch)
            except Exception:
                log.exception("intake.batch_failed", size=len(batch))

    async def run_answering(self) -> None:
        """The one task that talks to the model: questions and diagnoses, in scheduler order."""
        while True:
            job = await self._work.get()
            if not self._accepting:
                return  # shutting down: questions stay pending in the journal
            self._idle.clear()
            try:
                await job()
            except Exception:
                log.exception("work.unexpected_error")
            finally:
                self._work.finished()
                self._idle.set()

    async def _answer_queued(self, entry: JournalEntry) -> None:
        self._queued -= 1
        try:
            await self._answer(entry)
        except Exception:
            log.exception(
                "question.unexpected_error",
                question_id=entry.question_id,
                terminal_id=entry.terminal_id,
            )

    # ---- intake -----------------------------------------------------------------------------

    async def _intake_batch(self, batch: list[InboundMessage]) -> None:
        accepted: list[Accepted] = []
        for inbound in batch:
            self.metrics.received += 1
            verdict = screen(
                inbound, self._adapters[inbound.bus], self._limits, self._streaming_terminals
            )
            if isinstance(verdict, Accepted):
                accepted.append(verdict)
            elif isinstance(verdict, Refused):
                self._refuse(inbound, verdict)
            else:
                self.metrics.rejected += 1
                log.warning(
                    "question.unroutable",
                    reason="terminal id in topic is not valid",
                    topic=inbound.topic,
                    terminal_id=inbound.terminal_id,
                    bus=inbound.bus,
                )
                inbound.ack()
                await settle_one(inbound, delivered=True)  # nobody to tell; never redeliver it
        if not accepted:
            return
        recorded_batch = await self._record(accepted)
        if recorded_batch is None:
            return
        accepted, outcomes = recorded_batch
        for item, recorded in zip(accepted, outcomes, strict=True):
            item.inbound.ack()
            entry = item.entry
            self._outbox.hold(entry, item.inbound)
            bound = log.bind(
                question_id=entry.question_id, terminal_id=entry.terminal_id, topic=entry.topic
            )
            if recorded.outcome == RecordOutcome.NEW:
                bound.info("question.received", bus=entry.bus, redelivered=item.inbound.redelivered)
                if self._rate_exceeded(entry.terminal_id):
                    self._refuse_rate_limited(entry)
                else:
                    self._enqueue(entry)
            elif recorded.outcome == RecordOutcome.DUPLICATE_PENDING:
                self.metrics.duplicate += 1
                bound.info("question.duplicate", state="pending")
            else:
                self.metrics.duplicate += 1
                assert recorded.reply is not None
                bound.info("question.duplicate", state=str(recorded.reply.state))
                await self._outbox.publish_stored(entry, recorded.reply.payload)

    async def _record(
        self, accepted: list[Accepted]
    ) -> tuple[list[Accepted], list[Recorded]] | None:
        """Journal the batch, retrying while the journal cannot be written (e.g. disk full).

        Nothing is acknowledged until the write succeeds. An MQTT broker does not resend an
        unacknowledged message within a session, so giving up on it would leave it unanswered
        until the next reconnect (found by tests/faults/test_disk_full.py): those are retried
        here with backoff. Buses whose broker redelivers (JetStream) get theirs back at once.
        """
        delay = JOURNAL_RETRY_MIN_S
        while True:
            try:
                outcomes = await self._io.run(self._journal.record, [a.entry for a in accepted])
            except Exception as exc:
                self.metrics.journal_write_failures += 1
                log.error(
                    "journal.write_failed",
                    error=str(exc),
                    questions=len(accepted),
                    question_ids=[a.entry.question_id for a in accepted[:16]],
                    retry_in_s=delay,
                )
            else:
                return accepted, outcomes
            keep: list[Accepted] = []
            for item in accepted:
                if self._adapters[item.inbound.bus].broker_redelivers:
                    await settle_one(item.inbound, delivered=False)
                else:
                    keep.append(item)
            accepted = keep
            if not accepted or not self._accepting:
                return None  # unacknowledged: the broker redelivers them to the next session
            await asyncio.sleep(delay)
            delay = min(delay * 2, JOURNAL_RETRY_MAX_S)

    def _rate_exceeded(self, terminal: str) -> bool:
        """Per-terminal token bucket, spent only by questions new to the journal: a broker
        redelivery or a terminal's re-send of a known id is a duplicate, never a new question,
        while a redelivered copy of a question that was never journaled counts like any other
        (exempting DUP copies let a flood past the limit after a reconnect)."""
        if self._rate is None:
            return False
        return self._rate.reserve(terminal, time.monotonic()) is None

    def _refuse(self, inbound: InboundMessage, refused: Refused) -> None:
        """Count, log and ack a refused message; its error reply goes out from a task of its
        own, so a sender of bad input cannot slow down the intake of everyone else."""
        to, terminal, error = refused.to, refused.terminal_id, refused.error
        self.metrics.rejected += 1
        log.warning(
            "question.rejected",
            code=str(error.code),
            reason=error.message,
            question_id=error.question_id,
            terminal_id=terminal,
            topic=inbound.topic,
            payload_bytes=len(inbound.payload),
        )
        inbound.ack()
        payload = error_reply(
            terminal_id=terminal,
            question_id=error.question_id,
            code=error.code,
            message=error.message,
            retryable=False,
        )

        async def reply() -> None:
            sent = await self._outbox.send(
                to, payload, question_id=error.question_id, terminal_id=terminal
            )
            await settle_one(inbound, delivered=sent)

        self._outbox.background(reply())

    # ---- queue and answering ----------------------------------------------------------------

    def _refuse_rate_limited(self, entry: JournalEntry) -> None:
        """Like `busy`: journaled as refused (a retry with the same id is a new attempt) and
        answered from a task of its own, so a flooding terminal's refusals never hold up the
        intake of everyone else's questions."""
        self.metrics.rate_limited += 1
        log.warning(
            "question.rate_limited",
            question_id=entry.question_id,
            terminal_id=entry.terminal_id,
            topic=entry.topic,
        )
        self._refuse_journaled(
            entry,
            ErrorCode.RATE_LIMITED,
            f"more than {self._limits.questions_per_minute:g} questions per minute "
            f"(burst {self._limits.question_burst}) from this terminal; ask again shortly",
        )

    def _refuse_journaled(self, entry: JournalEntry, code: ErrorCode, message: str) -> None:
        """A retryable refusal of a journaled question (state refused: the same id may come
        again), sent from a task of its own."""
        payload = error_reply(
            terminal_id=entry.terminal_id,
            question_id=entry.question_id,
            code=code,
            message=message,
            retryable=True,
        )
        self._outbox.background(self._outbox.deliver(entry, "error", payload, final=False))

    def _enqueue(self, entry: JournalEntry, *, force: bool = False) -> None:
        if not force and self._queued >= self.queue_capacity:
            self.metrics.busy += 1
            log.warning(
                "question.busy",
                question_id=entry.question_id,
                terminal_id=entry.terminal_id,
                queue_depth=self._queued,
            )
            self._refuse_journaled(
                entry, ErrorCode.BUSY, f"{self._queued} questions are waiting; ask again shortly"
            )
            return
        self._queued += 1
        self._work.put(Lane.QUESTION, functools.partial(self._answer_queued, entry))

    async def _reply_error(
        self, entry: JournalEntry, code: ErrorCode, message: str, *, retryable: bool
    ) -> None:
        """The error reply instead of an answer; a retryable one leaves the id open for a retry."""
        payload = error_reply(
            terminal_id=entry.terminal_id,
            question_id=entry.question_id,
            code=code,
            message=message,
            retryable=retryable,
        )
        await self._outbox.deliver(entry, "error", payload, final=not retryable)

    async def _answer(self, entry: JournalEntry) -> None:
        bound = log.bind(
            question_id=entry.question_id, terminal_id=entry.terminal_id, topic=entry.topic
        )
        now = time.time()
        if entry.deadline is not None and now > entry.deadline:
            self.metrics.expired += 1
            bound.info("question.expired", late_s=round(now - entry.deadline, 3))
            message = "the question's message expiry passed before it could be answered"
            await self._reply_error(entry, ErrorCode.EXPIRED, message, retryable=False)
            return
        history = await self._turns.history(entry, now)
        ctx = QuestionContext(
            question_id=entry.question_id,
            terminal_id=entry.terminal_id,
            text=entry.text,
            received_at=entry.received_at,
            started_at=now,
            history=tuple(history),
        )

        async def count_run() -> None:
            self.metrics.model_runs += 1
            await self._io.run(self._journal.note_model_run, entry.terminal_id, entry.question_id)

        partials = partial_stream(self._adapters.get(entry.bus), entry)
        try:
            answer = await self._answerer.answer(
                ctx,
                before_generate=count_run,
                on_token=partials.on_token if partials is not None else None,
                on_quote=partials.quote if partials is not None else None,
            )
        except WorkerUnavailable as exc:
            bound.warning("question.degraded_fallback", error=exc.message)
            answer = fallback_answer(ctx, self._answerer.policy.fallback_text, retrieve_s=0.0)
        except GatewayError as exc:
            self.metrics.failed += 1
            bound.warning("question.failed", code=str(exc.code), error=exc.message)
            await self._reply_error(entry, exc.code, exc.message, retryable=exc.retryable)
            return
        except Exception:
            # A defect, not a state of the world: the terminal still hears about it (an
            # acknowledged question must get a reply), the log has the traceback.
            self.metrics.failed += 1
            bound.exception("question.unexpected_error")
            message = "internal error while answering; logged as question.unexpected_error"
            await self._reply_error(entry, ErrorCode.INTERNAL, message, retryable=True)
            return
        if partials is not None:
            partials.finish()
        if answer.cached:
            self.metrics.cached += 1
        elif answer.fallback:
            self.metrics.fallback += 1
        else:
            self.metrics.answered += 1
            self.metrics.observe_check(answer.check)
        self.metrics.observe_answer(answer.latency, answer.usage.completion_tokens)
        bound.info(
            "question.answered",
            fallback=answer.fallback,
            cached=answer.cached,
            sources=len(answer.sources),
            total_ms=round(answer.latency.total_ms, 1),
            completion_tokens=answer.usage.completion_tokens,
            grounded=answer.grounded,
        )
        turn = None
        if entry.conversation_id is not None:
            answer = answer.model_copy(
                update={"conversation_id": entry.conversation_id, "history_turns": len(history)}
            )
            turn = self._turns.record(entry, answer)
        await self._outbox.deliver(
            entry, "answer", answer.model_dump_json().encode(), final=True, turn=turn
        )
        if turn is not None:
            await self._turns.share(entry, history, turn)

    async def drain(self, timeout_s: float) -> bool:
        """Let the answer in progress finish (bounded); queued questions stay pending in the
        journal and are answered after the restart. True when nothing was left in progress."""
        deadline = time.monotonic() + timeout_s
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        # Refusals and busy replies in flight: journaled ones are republished after a restart
        # anyway, but letting them out now spares the terminals a wait.
        await self._outbox.wait_background(deadline - time.monotonic())
        return True
