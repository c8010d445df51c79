"""Test devices and a SCADA client on a real broker: events in, retained diagnoses out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


def event(kind: str, code: str, severity: str = "warning", **extra: Any) -> bytes:
    body = {"kind": kind, "code": code, "severity": severity, "timestamp": datetime.now(UTC)}
    body.update(extra)
    return json.dumps(body, default=str).encode()


def event_topic(device: str, site: str = "plant1") -> str:
    return f"edge/{site}/device/{device}/event"


async def eventually(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Poll an in-process counter (gateway metrics have no change notification)."""
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"condition not met within {timeout_s} s")


def publish_paced(port: int, messages: Sequence[tuple[str, bytes]], duration_s: float) -> float:
    """Publish at QoS 1, evenly over `duration_s`, and wait for every PUBACK (blocking).
    Returns the seconds it took."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"dev-{secrets.token_hex(4)}",
        protocol=paho.MQTTv5,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.monotonic()
    infos = []
    try:
        slices = 100
        per = max(1, len(messages) // slices)
        for i in range(0, len(messages), per):
            for topic, payload in messages[i : i + per]:
                infos.append(client.publish(topic, payload, qos=1))
            due = started + duration_s * (i + per) / len(messages)
            time.sleep(max(0.0, due - time.monotonic()))
        for info in infos:
            info.wait_for_publish(timeout=30)
        return time.monotonic() - started
    finally:
        client.disconnect()
        client.loop_stop()


@dataclass
class Scada:
    """Subscribes to every diagnosis topic and keeps what arrives, retained flag included."""

    client: aiomqtt.Client
    received: list[tuple[str, dict[str, Any], bool]] = field(default_factory=list)
    arrived_at: list[float] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _collect(self) -> None:
        async for message in self.client.messages:
            async with self._arrived:
                payload = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                self.received.append((str(message.topic), payload, bool(message.retain)))
                self.arrived_at.append(time.monotonic())
                self._arrived.notify_all()

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [p for t, p, _ in self.received if t == topic]

    def times(self, topic: str) -> list[float]:
        return [
            at for (t, _, _), at in zip(self.received, self.arrived_at, strict=True) if t == topic
        ]

    async def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 120.0) -> None:
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(predicate)

    async def wait_for(
        self, topic: str, n: int = 1, timeout_s: float = 120.0, **match: Any
    ) -> dict[str, Any]:
        def found() -> list[dict[str, Any]]:
            return [p for p in self.on(topic) if all(p.get(k) == v for k, v in match.items())]

        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(found()) >= n)
        return found()[-1]


@contextlib.asynccontextmanager
async def scada(port: int, topic: str = "edge/plant1/diagnosis/#") -> AsyncIterator[Scada]:
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=f"scada-{secrets.token_hex(3)}"
    ) as client:
        s = Scada(client)
        await client.subscribe(topic, qos=1)
        collector = asyncio.create_task(s._collect())
        try:
            yield s
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector


@contextlib.asynccontextmanager
async def device_client(port: int) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"dev-{secrets.token_hex(3)}") as c:
        yield c
