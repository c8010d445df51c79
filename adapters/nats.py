"""NATS adapter (nats-py): core request/reply in a queue group, or JetStream (jetstream.py).

Why two modes: core NATS is at-most-once (a question published while no gateway listens is
gone) and fastest; JetStream stores questions in a work-queue stream, so one survives a gateway
crash and is redelivered until a gateway has *answered* it. Either way several instances share
the load through the server (queue group / one durable consumer), never through our own code.

Reconnect is unlimited (`max_reconnect_attempts=-1`): nats-py's default gives up after 60
attempts x 2 s, after which a plant box would stay deaf until someone restarts it. Conversation
turns are shared through a key-value bucket (conversation_kv.py).

Reply subjects are chosen by the requester, so, as with MQTT's response topic, one is honoured
only inside the terminal's own answer subject or under a configured reply prefix (default
`_INBOX.{terminal_id}.`: the terminal's own request/reply inboxes, with the client's inbox
prefix set to `_INBOX.<terminal id>`; a bare `_INBOX.` would let t1 name t2's inbox, whose
random suffix is no secret from a subscriber of `_INBOX.>`); anything else is refused with
`forbidden_response_topic` on the terminal's own answer subject. Core mode uses the request's
reply subject; JetStream mode (whose reply subject carries the ack) a `Reply-To` header.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from adapters.conversation_kv import NatsConversationStore, open_shared_turns
from gateway.bus import (
    ROUTE_QUESTION,
    InboundMessage,
    MessageHandler,
    Settle,
    Subscription,
    settled_by_ack,
)
from gateway.config import NatsConfig
from gateway.logging import get_logger
from models.health import BusHealth

log = get_logger(__name__)

QUESTION_ID_HEADER = "Question-Id"
MSG_ID_HEADER = "Nats-Msg-Id"
REPLY_TO_HEADER = "Reply-To"
CONTENT_TYPE = {"Content-Type": "application/json"}


class NatsPublishError(Exception):
    """A publish could not be confirmed by the server (not connected, or flush timed out)."""


def is_concrete_subject(subject: str) -> bool:
    """A subject we may publish to: non-empty tokens, no wildcards or whitespace, bounded."""
    if not 0 < len(subject) <= 512 or any(c.isspace() for c in subject):
        return False
    tokens = subject.split(".")
    return all(tokens) and not any(t in ("*", ">") for t in tokens)


def terminal_token_index(subject_template: str) -> int:
    """Index of the single `*` token (the terminal id) in the question subscription."""
    return subject_template.split(".").index("*")


class NatsAdapter:
    """See the module docstring. All state is touched from the event loop only."""

    name = "nats"

    def __init__(
        self,
        cfg: NatsConfig,
        *,
        client_name: str,
        question_subject: str,
        answer_subject_template: str,
        status_subject: str,
        online_payload: bytes,
        stream: str,
        subscriptions: Sequence[Subscription] = (),
        retained_subjects: Sequence[str] = (),
        state_stream: str | None = None,
        max_partial_backlog: int = 64,
        conversations: tuple[str, float] | None = None,
    ) -> None:
        """`subscriptions`: extra routes (device events, the gateways' status and diagnoses),
        core subscriptions in both modes (in the queue group when `shared`): events are
        coalesced and re-sent by devices, so at-most-once is the right price for not journaling
        a flood. `retained_subjects` (JetStream mode): kept as last values in `state_stream`,
        NATS's equivalent of MQTT retained messages."""
        self._cfg = cfg
        self._subscriptions = tuple(subscriptions)
        self._retained_subjects = list(retained_subjects)
        self._state_stream = state_stream
        self.broker_redelivers = cfg.mode == "jetstream"
        self._client_name = client_name
        self._question_subject = question_subject
        self._terminal_index = terminal_token_index(question_subject)
        self._answer_template = answer_subject_template
        self._status_subject = status_subject
        self._online = online_payload
        self._stream = stream
        self._nc = Client()
        self._handler: MessageHandler | None = None
        self._stopping = False
        self._ever_connected = False
        self.reconnects = 0
        self.disconnects = 0
        self.slow_consumers = 0
        self.dead_letters = 0
        self.last_error: str | None = None
        self._partials: set[asyncio.Task[None]] = set()
        self._max_partials = max_partial_backlog
        self._jetstream: Any = None  # adapters.jetstream.JetStreamIntake, imported lazily
        self._conversations = conversations  # (bucket, ttl_s) of the shared turns
        self.conversations: NatsConversationStore | None = None  # once connected, if JetStream

    # ---- BusAdapter -------------------------------------------------------------------------

    async def start(self, on_message: MessageHandler) -> None:
        self._handler = on_message
        await self._nc.connect(**self._connect_options())
        self._ever_connected = True
        log.info(
            "nats.connected",
            server=str(self._nc.connected_url.netloc if self._nc.connected_url else None),
            mode=self._cfg.mode,
            subject=self._question_subject,
        )
        if self._cfg.mode == "core":
            await self._nc.subscribe(
                self._question_subject, queue=self._cfg.queue_group, cb=self._on_core_message
            )
        else:
            from adapters.jetstream import JetStreamIntake

            self._jetstream = JetStreamIntake(
                self._nc,
                self._cfg.jetstream,
                stream=self._stream,
                subject=self._question_subject,
                queue_group=self._cfg.queue_group,
                timeout_s=self._cfg.publish_timeout_s,
                deliver=self._on_jetstream_message,
                dead_letter=self._on_dead_letter,
            )
            await self._jetstream.start()
        await self._subscribe_routes()
        if self._conversations is not None:
            self.conversations = await open_shared_turns(self._nc, *self._conversations, self._cfg)
        await self._publish_status()

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
        reliable: bool = True,
    ) -> None:
        """Core publish; `reliable` waits for the server's PONG (the closest core NATS has to an
        acknowledgement: the server has the message and has routed it). NATS has no retained
        messages, so `retain` is ignored: subscribers get status and health on the next tick."""
        if not self._nc.is_connected:
            if reliable:
                raise NatsPublishError(f"not connected; {topic!r} not published")
            return
        try:
            await self._nc.publish(topic, payload, headers=CONTENT_TYPE)
            if reliable:
                await self._nc.flush(timeout=math.ceil(self._cfg.publish_timeout_s))
        except (nats.errors.Error, TimeoutError) as exc:
            raise NatsPublishError(f"publish to {topic!r} not confirmed: {exc!r}") from exc

    def publish_partial(
        self, topic: str, payload: bytes, *, correlation_data: bytes | None = None
    ) -> bool:
        """nats-py only publishes from a coroutine, which returns as soon as the message is in
        its write buffer; one short task per partial, at most `max_backlog` at a time."""
        if not self._nc.is_connected or len(self._partials) >= self._max_partials:
            return False
        task = asyncio.get_running_loop().create_task(self._send_partial(topic, payload))
        self._partials.add(task)
        task.add_done_callback(self._partials.discard)
        return True

    async def _send_partial(self, topic: str, payload: bytes) -> None:
        try:
            await self._nc.publish(topic, payload, headers=CONTENT_TYPE)
        except nats.errors.Error as exc:
            log.debug("nats.partial_dropped", subject=topic, error=repr(exc))

    def partial_topic(self, terminal_id: str, reply_to: str) -> str:
        """`{reply subject}.partial` inside the terminal's answer subject; for a request's inbox
        the answer subject's: the first message on an inbox completes the request, and a
        request's inbox subscription does not match a subject below the inbox."""
        own = self.answer_topic(terminal_id)
        base = reply_to if reply_to == own or reply_to.startswith(own + ".") else own
        return base + ".partial"

    def answer_topic(self, terminal_id: str) -> str:
        return self._answer_template.replace("{terminal_id}", terminal_id)

    def reply_allowed(self, terminal_id: str, requested: str) -> bool:
        if not is_concrete_subject(requested):
            return False
        own = self.answer_topic(terminal_id)
        if requested == own or requested.startswith(own + "."):
            return True
        prefixes = (p.replace("{terminal_id}", terminal_id) for p in self._cfg.reply_prefixes)
        return any(requested.startswith(p) and len(requested) > len(p) for p in prefixes)

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    def health(self) -> BusHealth:
        return BusHealth(
            connected=self.connected,
            reconnects=self.reconnects,
            disconnects=self.disconnects,
            slow_consumers=self.slow_consumers,
            dead_letters=self.dead_letters,
            last_error=self.last_error[:256] if self.last_error else None,
        )

    async def stop(self, offline_payload: bytes | None = None) -> None:
        self._stopping = True
        if self._jetstream is not None:
            await self._jetstream.stop()
        if offline_payload is not None and self.connected:
            try:
                await self.publish(self._status_subject, offline_payload)
            except NatsPublishError as exc:
                log.warning("nats.offline_status_not_sent", error=str(exc))
        try:
            await asyncio.wait_for(self._nc.drain(), timeout=self._cfg.publish_timeout_s)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("nats.drain_failed", error=repr(exc))
        if not self._nc.is_closed:
            await self._nc.close()

    async def _subscribe_routes(self) -> None:
        kept = self._cfg.mode == "jetstream" and bool(
            self._retained_subjects and self._state_stream
        )
        if kept:
            from adapters.jetstream import ensure_last_value_stream, last_values

            assert self._state_stream is not None
            await ensure_last_value_stream(
                self._nc,
                self._cfg.jetstream,
                name=self._state_stream,
                subjects=self._retained_subjects,
                timeout_s=self._cfg.publish_timeout_s,
            )
        for sub in self._subscriptions:
            index = terminal_token_index(sub.topic_filter)
            callback = self._route_callback(sub, index)
            if sub.last_values and kept:  # NATS's retained messages, before the live ones
                assert self._state_stream is not None
                for msg in await last_values(
                    self._nc,
                    stream=self._state_stream,
                    subject=sub.topic_filter,
                    timeout_s=self._cfg.publish_timeout_s,
                ):
                    await callback(msg)
            await self._nc.subscribe(
                sub.topic_filter,
                queue=self._cfg.queue_group if sub.shared else "",
                cb=callback,
            )

    def _route_callback(self, sub: Subscription, index: int) -> Callable[[Msg], Awaitable[None]]:
        async def on_route_message(msg: Msg) -> None:
            tokens = msg.subject.split(".")
            sender = tokens[index] if len(tokens) > index else None
            self._deliver(
                msg,
                reply=None,
                settle=settled_by_ack,
                redelivered=False,
                route=sub.route,
                sender=sender or None,
            )

        return on_route_message

    # ---- connection -------------------------------------------------------------------------

    def _connect_options(self) -> dict[str, Any]:
        cfg = self._cfg
        options: dict[str, Any] = {
            "servers": cfg.servers,
            "name": self._client_name,
            "connect_timeout": cfg.connect_timeout_s,
            "reconnect_time_wait": cfg.reconnect_wait_s,
            "max_reconnect_attempts": -1,  # never give up; see the module docstring
            "ping_interval": cfg.ping_interval_s,
            "allow_reconnect": True,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "closed_cb": self._on_closed,
        }
        if cfg.user is not None:
            password = cfg.resolved_password()
            options["user"] = cfg.user
            options["password"] = password.get_secret_value() if password else None
        token = cfg.resolved_token()
        if token is not None:
            options["token"] = token.get_secret_value()
        if cfg.creds_file is not None:
            options["user_credentials"] = str(cfg.creds_file)
        elif cfg.nkey_seed_file is not None:
            options["nkeys_seed"] = str(cfg.nkey_seed_file)
        if cfg.tls.enabled:
            context = ssl.create_default_context(
                cafile=str(cfg.tls.ca_file) if cfg.tls.ca_file else None
            )
            if cfg.tls.cert_file is not None:
                context.load_cert_chain(
                    str(cfg.tls.cert_file), str(cfg.tls.key_file) if cfg.tls.key_file else None
                )
            options["tls"] = context
        return options

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            self.slow_consumers += 1
            log.warning("nats.slow_consumer", subject=exc.subject, sid=exc.sid)
        else:
            log.warning("nats.error", error=repr(exc))
        self.last_error = repr(exc)

    async def _on_disconnected(self) -> None:
        if self._stopping or not self._ever_connected:
            return
        self.disconnects += 1
        self.last_error = "disconnected"
        log.warning("nats.disconnected", disconnects=self.disconnects)

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        url = self._nc.connected_url
        log.info("nats.reconnected", server=url.netloc if url else None, reconnects=self.reconnects)
        await self._publish_status()

    async def _on_closed(self) -> None:
        if not self._stopping:
            log.error("nats.closed", error=self.last_error)

    async def _publish_status(self) -> None:
        try:
            await self.publish(self._status_subject, self._online, reliable=False)
        except NatsPublishError as exc:  # pragma: no cover - reliable=False does not raise
            log.warning("nats.status_not_sent", error=str(exc))

    # ---- inbound ----------------------------------------------------------------------------

    def _terminal(self, subject: str) -> str | None:
        tokens = subject.split(".")
        return tokens[self._terminal_index] if len(tokens) > self._terminal_index else None

    async def _on_core_message(self, msg: Msg) -> None:
        self._deliver(msg, reply=msg.reply or None, settle=settled_by_ack, redelivered=False)

    def _on_jetstream_message(self, msg: Msg, settle: Settle, ack: Callable[[], None]) -> None:
        headers = msg.headers or {}
        redelivered = msg.metadata.num_delivered > 1
        self._deliver(
            msg, reply=headers.get(REPLY_TO_HEADER), settle=settle, redelivered=redelivered, ack=ack
        )

    def _deliver(
        self,
        msg: Msg,
        *,
        reply: str | None,
        settle: Settle,
        redelivered: bool,
        ack: Callable[[], None] | None = None,
        route: str = ROUTE_QUESTION,
        sender: str | None = None,
    ) -> None:
        if self._handler is None or self._stopping:
            return  # JetStream redelivers it; core NATS never promised anything
        headers = msg.headers or {}
        if route == ROUTE_QUESTION:
            sender = self._terminal(msg.subject) or None
        inbound = InboundMessage(
            bus=self.name,
            topic=msg.subject,
            payload=bytes(msg.data),
            terminal_id=sender if route == ROUTE_QUESTION else None,
            response_topic=reply,
            correlation_data=None,
            expiry_s=None,
            received_at=time.time(),
            redelivered=redelivered,
            ack=ack or _nothing,
            settle=settle,
            message_id=headers.get(QUESTION_ID_HEADER) or headers.get(MSG_ID_HEADER),
            route=route,
            sender_id=sender,
        )
        self._handler(inbound)

    async def _on_dead_letter(self, subject: str, payload: bytes, deliveries: int) -> None:
        """A question JetStream stopped delivering (MaxDeliver): tell the asker, count it."""
        from adapters.jetstream import dead_letter_reply

        self.dead_letters += 1
        terminal = self._terminal(subject)
        reply = dead_letter_reply(terminal, payload, deliveries)
        log.error(
            "nats.dead_letter",
            subject=subject,
            terminal_id=terminal,
            question_id=reply.question_id if reply else None,
            deliveries=deliveries,
        )
        if reply is None or terminal is None:
            return
        await _best_effort(
            self.publish(self.answer_topic(terminal), reply.model_dump_json().encode()),
            "nats.dead_letter_reply_failed",
        )


def _nothing() -> None:
    """Core NATS has no acknowledgement to send."""


async def _best_effort(call: Awaitable[None], event: str) -> None:
    try:
        await call
    except Exception as exc:
        log.warning(event, error=repr(exc))
