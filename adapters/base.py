"""The seam between buses and the core: one envelope in, one publish call out.

The core never imports paho or nats: an adapter turns its library's message into an
`InboundMessage` and offers `publish`. Adapters satisfy `BusAdapter` structurally (no base class).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from models.health import BusHealth

ROUTE_QUESTION = "question"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One more thing an adapter listens to besides questions.

    `route` names the handler the core dispatches to (a key of the app's routing table);
    `topic_filter` is the bus's own filter with exactly one single-level wildcard, whose value
    becomes `InboundMessage.sender_id` (e.g. the device id of a device event).
    """

    route: str
    topic_filter: str


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message for the core, whatever bus it came from.

    `route` says which subscription it matched (`question` unless the adapter was given extra
    subscriptions); `sender_id` is the value of that subscription's wildcard level, and for
    questions `terminal_id` carries the same value.

    `ack` acknowledges it to the broker; the core calls it only after the journal has the
    question. It is idempotent and safe to call after a reconnect (it then does nothing, since
    the broker will redeliver and that copy is acknowledged instead).
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
