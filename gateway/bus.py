"""The seam between buses and the core: one envelope in, one publish call out.

The core never imports paho or nats: an adapter turns its library's message into an
`InboundMessage` and offers `publish`. Adapters satisfy `BusAdapter` structurally (no base class).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from models.health import BusHealth

Settle = Callable[[bool], Awaitable[None]]
"""`settle(delivered)`: the asker has been told (True) or could not be told (False)."""


async def settled_by_ack(delivered: bool) -> None:
    """The settle of buses whose `ack` already ends the broker's responsibility (MQTT)."""


ROUTE_QUESTION = "question"
ROUTE_DEVICE_EVENT = "device_event"
ROUTE_PEER = "peer"
"""Status and health messages of the gateway instances (the roster of device owners)."""
ROUTE_DIAGNOSIS_MIRROR = "diagnosis_mirror"
"""Per-alarm diagnoses published by any instance (the alarm board of every instance)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """One more thing an adapter listens to besides questions.

    `route` names the handler the core dispatches to (a key of the app's routing table);
    `topic_filter` is the bus's own filter; the value of its first single-level wildcard
    becomes `InboundMessage.sender_id` (e.g. the device id of a device event). `shared`: taken
    through the shared subscription / queue group, like questions (each message reaches one
    instance); otherwise every instance receives every message (device events, which their
    owner handles; other instances' status and diagnoses).
    """

    route: str
    topic_filter: str
    shared: bool = True
    last_values: bool = False
    """Deliver the last value the bus keeps for each matching topic first: MQTT does it for
    every subscription (retained messages); NATS only in JetStream mode, from the state stream
    (core NATS keeps nothing)."""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message for the core, whatever bus it came from.

    `route` says which subscription it matched (`question` unless the adapter was given extra
    subscriptions); `sender_id` is the value of that subscription's wildcard level, and for
    questions `terminal_id` carries the same value.

    Two moments matter to a broker, and buses differ in which one they acknowledge:
    - `ack()`: the journal has the question. MQTT sends PUBACK here (the journal answers it
      after a crash). Idempotent, and safe after a reconnect (the redelivered copy is acked).
    - `settle(delivered)`: the reply (answer or final refusal) has been published (True), or
      publishing it failed (False). JetStream acknowledges here, so a question is redelivered
      (to this or another instance) until someone has answered it, and a failed reply is handed
      back for redelivery instead of waiting for a restart. MQTT's settle does nothing.
    The core calls `settle` exactly once per inbound message it accepted or refused.

    `message_id` is the bus's own id of the message (NATS `Question-Id` / `Nats-Msg-Id`
    header), used as the question id when the payload has none.
    """

    bus: str
    topic: str
    payload: bytes
    terminal_id: str | None
    response_topic: str | None
    correlation_data: bytes | None
    expiry_s: float | None
    received_at: float
    redelivered: bool
    ack: Callable[[], None] = field(repr=False)
    settle: Settle = field(default=settled_by_ack, repr=False)
    message_id: str | None = None
    route: str = ROUTE_QUESTION
    sender_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """Where a reply goes: the bus, the topic or subject, and the requester's correlation data."""

    bus: str
    topic: str
    correlation_data: bytes | None = None


MessageHandler = Callable[[InboundMessage], None]


@runtime_checkable
class BusAdapter(Protocol):
    """What the core needs from a bus."""

    name: str
    broker_redelivers: bool
    """True when the broker redelivers every question not yet settled (JetStream): questions
    left pending by a crash are then the broker's to redeliver, possibly to another instance,
    and journal recovery must not answer them on its own."""

    async def start(self, on_message: MessageHandler) -> None:
        """Connect, subscribe, and return once the first connection is up."""
        ...

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
        reliable: bool = True,
    ) -> None:
        """Publish; with `reliable`, return only once the broker has acknowledged it."""
        ...

    def publish_partial(
        self, topic: str, payload: bytes, *, correlation_data: bytes | None = None
    ) -> bool:
        """Best effort (QoS 0), never waits. False when nothing was sent: not connected, or
        `max_backlog` partials are still unsent (a slow bus gets fewer, larger pieces rather
        than a queue that grows with every token)."""
        ...

    def partial_topic(self, terminal_id: str, reply_to: str) -> str:
        """Where partial answers for a reply going to `reply_to` are published."""
        ...

    def answer_topic(self, terminal_id: str) -> str:
        """The terminal's own answer topic (errors always go there)."""
        ...

    def reply_allowed(self, terminal_id: str, requested: str) -> bool:
        """Whether a requester-chosen reply address is inside the terminal's own answer space."""
        ...

    @property
    def connected(self) -> bool: ...

    def health(self) -> BusHealth: ...

    async def stop(self, offline_payload: bytes | None = None) -> None:
        """Publish the offline status (if given), stop taking messages, disconnect."""
        ...
