"""JetStream intake: a work-queue stream of questions and one durable pull consumer.

Delivery contract (differs from MQTT on purpose): a message is acknowledged when its reply has
been published (`settle(True)`), not when the journal has it. Until then it is *held*: touched
with `in_progress()` every third of the ack wait, so a long generation or a long queue does not
trigger a redelivery, while a gateway that dies stops touching and the server hands the message
to another instance (or to this one after its restart) once AckWait expires. A reply that could
not be published is `nak`ed for redelivery. `max_ack_pending` bounds what one consumer holds.

The stream and consumer are created or updated from configuration at every start, and the
consumer's settings are read back: a server that reports other values refuses the start with
`JetStreamConfigError`, since a silently different AckWait or MaxDeliver breaks the contract.

Dead letters: when MaxDeliver is reached the server publishes an advisory; one instance (queue
group) fetches the message, answers the asker with an error, and deletes it from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api

from gateway.bus import Settle
from gateway.config import JetStreamConfig
from gateway.logging import get_logger
from models.errors import ErrorCode, ErrorReply

log = get_logger(__name__)

Deliver = Callable[[Msg, Settle, Callable[[], None]], None]
DeadLetter = Callable[[str, bytes, int], Awaitable[None]]
TIME_TOLERANCE_S = 0.001


class JetStreamConfigError(Exception):
    """The server's stream or consumer does not match the configuration (or cannot be made to)."""


def consumer_config(cfg: JetStreamConfig, subject: str) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=cfg.consumer,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=cfg.ack_wait_s,
        max_deliver=cfg.max_deliver,
        max_ack_pending=cfg.max_ack_pending,
        backoff=list(cfg.backoff_s) or None,
        filter_subject=subject,
    )


def consumer_mismatches(cfg: JetStreamConfig, actual: api.ConsumerConfig) -> list[str]:
    """Every setting the server reports differently from what we asked for."""
    # With a backoff list the server's AckWait is the first backoff step (nats-server rule).
    wanted_ack_wait = cfg.backoff_s[0] if cfg.backoff_s else cfg.ack_wait_s
    problems = []
    if actual.ack_wait is None or abs(actual.ack_wait - wanted_ack_wait) > TIME_TOLERANCE_S:
        problems.append(f"ack_wait {actual.ack_wait} != {wanted_ack_wait}")
    if actual.max_deliver != cfg.max_deliver:
        problems.append(f"max_deliver {actual.max_deliver} != {cfg.max_deliver}")
    if actual.max_ack_pending != cfg.max_ack_pending:
        problems.append(f"max_ack_pending {actual.max_ack_pending} != {cfg.max_ack_pending}")
    got_backoff = list(actual.backoff or [])
    if len(got_backoff) != len(cfg.backoff_s) or any(
        abs(a - b) > TIME_TOLERANCE_S for a, b in zip(got_backoff, cfg.backoff_s, strict=False)
    ):
        problems.append(f"backoff {got_backoff} != {list(cfg.backoff_s)}")
    if actual.ack_policy != api.AckPolicy.EXPLICIT:
        problems.append(f"ack_policy {actual.ack_policy} != explicit")
    return problems


def dead_letter_reply(terminal: str | None, payload: bytes, deliveries: int) -> ErrorReply | None:
    """The error the asker gets for a question no gateway could answer in MaxDeliver tries."""
    from gateway.questions.intake import is_identifier

    if terminal is None or not is_identifier(terminal):
        return None
    question_id: str | None = None
    with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError):
        raw = json.loads(payload).get("id")
        question_id = raw if isinstance(raw, str) and is_identifier(raw) else None
    return ErrorReply(
        question_id=question_id,
        terminal_id=terminal,
        code=ErrorCode.UNDELIVERABLE,
        message=f"no gateway could answer this question in {deliveries} deliveries",
        retryable=True,
        sent_at=datetime.now(UTC),
    )


async def ensure_last_value_stream(
    nc: Client, cfg: JetStreamConfig, *, name: str, subjects: list[str], timeout_s: float
) -> None:
    """A stream keeping only the newest message of each subject: NATS's retained messages.

    MQTT brokers keep the last retained diagnosis per topic for a SCADA client that connects
    later; JetStream does the same with `max_msgs_per_subject=1`, and a late subscriber reads
    the current state with a `last per subject` consumer or a direct get. Publishing needs no
    change: the stream captures the plain publishes on its subjects.
    """
    js = nc.jetstream(timeout=timeout_s)
    config = api.StreamConfig(
        name=name,
        subjects=subjects,
        retention=api.RetentionPolicy.LIMITS,
        max_msgs_per_subject=1,
        discard=api.DiscardPolicy.OLD,
        storage=api.StorageType.FILE if cfg.storage == "file" else api.StorageType.MEMORY,
        num_replicas=cfg.replicas,
        allow_direct=True,
    )
    try:
        try:
            await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            await js.add_stream(config)
            log.info("jetstream.state_stream_created", stream=name, subjects=subjects)
        else:
            await js.update_stream(config)
    except nats.js.errors.APIError as exc:
        raise JetStreamConfigError(f"state stream {name!r}: {exc}") from exc


async def last_values(nc: Client, *, stream: str, subject: str, timeout_s: float) -> list[Msg]:
    """The newest message of every subject matching `subject` in the last-value `stream`, read
    with a short-lived ephemeral consumer (deliver last per subject, no acks)."""
    js = nc.jetstream(timeout=timeout_s)
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=api.AckPolicy.NONE,
        inactive_threshold=60.0,
    )
    try:
        consumer = await js.pull_subscribe(subject, stream=stream, config=config)
    except nats.js.errors.APIError as exc:
        raise JetStreamConfigError(f"state stream {stream!r}: {exc}") from exc
    try:
        pending = (await consumer.consumer_info()).num_pending or 0
        found: list[Msg] = []
        while len(found) < pending:
            found.extend(await consumer.fetch(min(256, pending - len(found)), timeout=timeout_s))
        log.info("nats.last_values_replayed", subject=subject, messages=len(found))
        return found
    finally:
        await consumer.unsubscribe()


class JetStreamIntake:
    """Owns the stream/consumer set-up, the pull loop, the held messages and the dead letters."""

    def __init__(
        self,
        nc: Client,
        cfg: JetStreamConfig,
        *,
        stream: str,
        subject: str,
        queue_group: str,
        timeout_s: float,
        deliver: Deliver,
        dead_letter: DeadLetter,
    ) -> None:
        self._nc = nc
        self._cfg = cfg
        self._stream = stream
        self._subject = subject
        self._queue_group = queue_group
        self._timeout_s = timeout_s
        self._deliver = deliver
        self._dead_letter = dead_letter
        self._js = nc.jetstream(timeout=timeout_s)
        self._held: dict[str, Msg] = {}  # ack subject (unique per delivery) -> message
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        await self._ensure_stream()
        await self._ensure_consumer()
        sub = await self._js.pull_subscribe_bind(durable=self._cfg.consumer, stream=self._stream)
        advisory = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self._stream}.{self._cfg.consumer}"
        await self._nc.subscribe(advisory, queue=self._queue_group, cb=self._on_max_deliveries)
        self._tasks = [
            asyncio.create_task(self._pull(sub), name="jetstream-pull"),
            asyncio.create_task(self._touch_held(), name="jetstream-in-progress"),
        ]

    async def stop(self) -> None:
        """Stop pulling; hand held (unanswered) questions back at once rather than at AckWait."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        held, self._held = list(self._held.values()), {}
        for msg in held:
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()
        if held:
            log.info("jetstream.released_on_stop", questions=len(held), stream=self._stream)

    # ---- set-up -----------------------------------------------------------------------------

    async def _ensure_stream(self) -> None:
        config = api.StreamConfig(
            name=self._stream,
            subjects=[self._subject],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE if self._cfg.storage == "file" else api.StorageType.MEMORY,
            num_replicas=self._cfg.replicas,
            duplicate_window=self._cfg.duplicate_window_s,
            max_age=self._cfg.max_age_s,
            discard=api.DiscardPolicy.NEW,
        )
        try:
            try:
                await self._js.stream_info(self._stream)
            except nats.js.errors.NotFoundError:
                await self._js.add_stream(config)
                log.info("jetstream.stream_created", stream=self._stream, subject=self._subject)
            else:
                await self._js.update_stream(config)
        except nats.js.errors.APIError as exc:
            raise JetStreamConfigError(f"stream {self._stream!r}: {exc}") from exc

    async def _ensure_consumer(self) -> None:
        wanted = consumer_config(self._cfg, self._subject)
        try:
            await self._js.add_consumer(self._stream, wanted)
            info = await self._js.consumer_info(self._stream, self._cfg.consumer)
        except nats.js.errors.APIError as exc:
            raise JetStreamConfigError(f"consumer {self._cfg.consumer!r}: {exc}") from exc
        problems = consumer_mismatches(self._cfg, info.config)
        if problems:
            log.error(
                "jetstream.consumer_mismatch",
                stream=self._stream,
                consumer=self._cfg.consumer,
                problems=problems,
            )
            raise JetStreamConfigError(
                f"consumer {self._cfg.consumer!r} on {self._stream!r} does not match the "
                "configuration: " + "; ".join(problems)
            )
        log.info(
            "jetstream.consumer_ready",
            stream=self._stream,
            consumer=self._cfg.consumer,
            ack_wait_s=info.config.ack_wait,
            max_deliver=info.config.max_deliver,
            max_ack_pending=info.config.max_ack_pending,
            backoff_s=info.config.backoff,
            pending=info.num_pending,
            ack_pending=info.num_ack_pending,
        )

    # ---- running ----------------------------------------------------------------------------

    async def _pull(self, sub: nats.js.JetStreamContext.PullSubscription) -> None:
        while not self._stopping:
            if not self._nc.is_connected:
                await asyncio.sleep(0.1)
                continue
            try:
                msgs = await sub.fetch(self._cfg.fetch_batch, timeout=self._cfg.fetch_timeout_s)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except Exception as exc:  # a fetch failure must never end the intake
                log.warning("jetstream.fetch_failed", error=repr(exc), stream=self._stream)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                self._accept(msg)

    def _accept(self, msg: Msg) -> None:
        key = msg.reply

        def held() -> None:  # the journal has it: keep it alive until the reply is out
            if not self._stopping:
                self._held[key] = msg

        async def settle(delivered: bool) -> None:
            self._held.pop(key, None)
            if delivered:
                await msg.ack_sync(timeout=self._timeout_s)
            else:
                await msg.nak()

        self._deliver(msg, settle, held)

    async def _touch_held(self) -> None:
        while True:
            await asyncio.sleep(self._cfg.progress_interval_s)
            if not self._nc.is_connected:
                continue
            for msg in list(self._held.values()):
                try:
                    await msg.in_progress()
                except nats.errors.Error as exc:
                    log.warning(
                        "jetstream.in_progress_failed", error=repr(exc), subject=msg.subject
                    )

    async def _on_max_deliveries(self, advisory: Msg) -> None:
        try:
            event = json.loads(advisory.data)
            seq = int(event["stream_seq"])
            deliveries = int(event.get("deliveries", self._cfg.max_deliver))
            stored = await self._js.get_msg(self._stream, seq)
        except Exception as exc:
            log.error("jetstream.dead_letter_unreadable", error=repr(exc), stream=self._stream)
            return
        await self._dead_letter(stored.subject or "", stored.data or b"", deliveries)
        try:
            await self._js.delete_msg(self._stream, seq)
        except Exception as exc:
            log.warning("jetstream.dead_letter_not_deleted", error=repr(exc), seq=seq)
