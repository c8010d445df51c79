"""Which instance handles a device's events: one owner per device among the live instances.

Several gateways behind one broker share questions through the broker (shared subscription,
queue group), but a device's alarms are state: raise, repeat and clear must be handled in order
by one instance, or a clear handled by an instance that never saw the raise publishes a headline
that hides an active alarm. So every instance receives every device event (a plain
subscription), and handles only the devices it owns.

The owner is chosen by rendezvous hashing over the live instances: every instance computes the
same owner from the same roster, with no messages between them, and when an instance dies only
its own devices move (each to the instance that ranks next for it). The roster is what the
brokers already carry: each instance's status (MQTT: retained, with the Last Will saying
`offline` the moment a connection dies) and its periodic health message; an instance whose last
heartbeat is older than `timeout_s` is dead (NATS has no Last Will, so this is how a `kill -9`
is noticed there).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from models.health import GatewayState


def owner(device_id: str, instances: Iterable[str]) -> str | None:
    """The instance that handles `device_id`: the highest rendezvous score; None if none."""
    return max(
        instances,
        key=lambda instance: hashlib.sha256(f"{instance}\x00{device_id}".encode()).digest(),
        default=None,
    )


MAX_PEERS = 256
"""Instances a roster keeps: far more gateways than one site runs."""


@dataclass(slots=True)
class _Peer:
    state: GatewayState
    seen_at: float
    """Wall-clock time (epoch seconds) of the latest evidence that it was alive."""


class Roster:
    """The live instances, as this instance learns them from status and health messages.

    State comes from the status topic alone (the broker keeps one retained status per instance,
    the latest, and the Last Will replaces it with `offline`); liveness from heartbeats: the
    wall-clock times inside the messages (`Status.since`, `Health.generated_at`), so a retained
    heartbeat of an instance that died an hour ago does not make it live again when this
    instance starts and the broker replays it.
    """

    def __init__(self, self_id: str, *, timeout_s: float) -> None:
        self.self_id = self_id
        self.timeout_s = timeout_s
        self._peers: dict[str, _Peer] = {}

    def _known(self, instance: str, state: GatewayState) -> _Peer | None:
        """The peer's record, made on first sight while fewer than MAX_PEERS are known (the
        status topics are open to every client of the broker: the roster stays bounded)."""
        peer = self._peers.get(instance)
        if peer is None and len(self._peers) < MAX_PEERS:
            peer = self._peers[instance] = _Peer(state, 0.0)
        return peer

    def status(self, instance: str, state: GatewayState, since: datetime | None) -> None:
        """The instance's status message: its state now (and, when online, a heartbeat)."""
        peer = self._known(instance, state)
        if peer is None:
            return
        peer.state = state
        if since is not None:
            peer.seen_at = max(peer.seen_at, since.timestamp())

    def heartbeat(self, instance: str, at: datetime) -> None:
        """A health message generated at `at`: alive then, whatever its state was."""
        peer = self._known(instance, GatewayState.ONLINE)
        if peer is not None:
            peer.seen_at = max(peer.seen_at, at.timestamp())

    def live(self, now: float) -> list[str]:
        """Instances alive at wall-clock `now`, this one always among them, sorted."""
        alive = {
            instance
            for instance, peer in self._peers.items()
            if peer.state != GatewayState.OFFLINE and now - peer.seen_at <= self.timeout_s
        }
        return sorted(alive | {self.self_id})

    def owns(self, device_id: str, now: float) -> bool:
        return owner(device_id, self.live(now)) == self.self_id
