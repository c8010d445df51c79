"""Test harness: an in-process gateway and MQTT terminals, all talking to a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.app import Gateway
from gateway.cli.ask import NO_DELAY
from gateway.config import Settings


class GatewayRunner:
    """Runs `Gateway.run` as a task; `start` returns when it is ready, `stop` when it has exited."""

    def __init__(self, settings: Settings, *, allow_test_ops: bool = True) -> None:
        self.settings = settings
        self.allow_test_ops = allow_test_ops
        self.gateway: Gateway | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 60.0) -> Gateway:
        self._stop = asyncio.Event()
        self.gateway = Gateway(self.settings, allow_test_ops=self.allow_test_ops)
        self._task = asyncio.create_task(self.gateway.run(self._stop))
        ready = asyncio.create_task(self.gateway.ready.wait())
        done, _ = await asyncio.wait(
            {ready, self._task}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if self._task in done:
            ready.cancel()
            self._task.result()  # raises the start-up error
            raise RuntimeError("gateway exited during start-up")
        if ready not in done:
            raise TimeoutError("gateway not ready in time")
        return self.gateway

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stop.set()
        await asyncio.wait_for(self._task, timeout=120)
        self._task = None

    async def __aenter__(self) -> Gateway:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@dataclass
class Reply:
    topic: str
    payload: bytes
    correlation: bytes | None

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.payload)
        return value


@dataclass
class Terminal:
    """A handheld terminal: publishes questions and collects everything it receives."""

    client: aiomqtt.Client
    site: str
    terminal_id: str
    replies: list[Reply] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def question_topic(self) -> str:
        return f"edge/{self.site}/terminal/{self.terminal_id}/question"

    @property
    def answer_topic(self) -> str:
        return f"edge/{self.site}/terminal/{self.terminal_id}/answer"

    async def ask(
        self,
        text: str | None = None,
        *,
        qid: str | None = None,
        payload: bytes | None = None,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        expiry_s: int | None = None,
    ) -> str:
        qid = qid or "q-" + secrets.token_hex(6)
        if payload is None:
            payload = json.dumps({"id": qid, "text": text}).encode()
        props: Properties | None = None
        if response_topic or correlation or expiry_s:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation:
                props.CorrelationData = correlation
            if expiry_s:
                props.MessageExpiryInterval = expiry_s
        await self.client.publish(self.question_topic, payload, qos=1, properties=props)
        return qid

    async def wait_for(
        self, qid: str, timeout_s: float = 60.0, *, topic: str | None = None
    ) -> Reply:
        """The first reply to `qid` (answers and errors both carry question_id), on `topic`
        if given (partial answers carry the question id too)."""

        def find() -> Reply | None:
            for reply in self.replies:
                if topic is not None and reply.topic != topic:
                    continue
                with contextlib.suppress(ValueError):
                    if reply.json.get("question_id") == qid:
                        return reply
            return None

        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: find() is not None)
        found = find()
        assert found is not None
        return found

    async def wait_count(self, n: int, timeout_s: float = 60.0) -> list[Reply]:
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.replies) >= n)
        return list(self.replies)

    async def _collect(self) -> None:
        async for message in self.client.messages:
            props = message.properties
            corr = getattr(props, "CorrelationData", None) if props else None
            async with self._arrived:
                self.replies.append(
                    Reply(str(message.topic), bytes(message.payload), corr)  # type: ignore[arg-type]
                )
                self._arrived.notify_all()


@contextlib.asynccontextmanager
async def terminal(
    port: int,
    terminal_id: str,
    *,
    site: str = "plant1",
    subscribe: tuple[str, ...] | None = None,
    protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
) -> AsyncIterator[Terminal]:
    """Connect a terminal subscribed to its answer topic and everything below it."""
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=f"term-{terminal_id}-{secrets.token_hex(3)}",
        protocol=protocol,
        socket_options=NO_DELAY,  # as a terminal should (gateway/cli/ask.py)
    ) as client:
        term = Terminal(client, site, terminal_id)
        # `answer/#` also matches `answer` itself; a second overlapping subscription would
        # deliver every answer twice.
        topics = subscribe or (term.answer_topic + "/#",)
        for topic in topics:
            await client.subscribe(topic, qos=1)
        collector = asyncio.create_task(term._collect())
        try:
            yield term
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
