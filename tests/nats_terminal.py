"""A NATS terminal for tests: asks by core request/reply or JetStream, collects its answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg


@dataclass
class NatsTerminal:
    nc: Client
    terminal_id: str
    site: str = "plant1"
    replies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def question_subject(self) -> str:
        return f"edge.{self.site}.question.{self.terminal_id}"

    @property
    def answer_subject(self) -> str:
        return f"edge.{self.site}.answer.{self.terminal_id}"

    async def request(self, qid: str, text: str, timeout_s: float = 120) -> dict[str, Any]:
        msg = await self.nc.request(
            self.question_subject,
            json.dumps({"id": qid, "text": text}).encode(),
            timeout=timeout_s,
            headers={"Question-Id": qid},
        )
        reply: dict[str, Any] = json.loads(msg.data)
        return reply

    async def publish_js(self, qid: str, text: str, *, msg_id: str | None = None) -> bool:
        """Publish into the question stream; returns whether the server called it a duplicate."""
        ack = await self.nc.jetstream().publish(
            self.question_subject,
            json.dumps({"id": qid, "text": text}).encode(),
            headers={"Nats-Msg-Id": msg_id or f"{self.terminal_id}:{qid}"},
        )
        return bool(ack.duplicate)

    async def wait_ids(self, qids: set[str], timeout_s: float = 120) -> None:
        def seen() -> set[str]:
            return {r.get("question_id") for _, r in self.replies} & qids  # type: ignore[misc]

        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: seen() == qids)

    def count(self, qid: str) -> int:
        return sum(1 for _, r in self.replies if r.get("question_id") == qid)

    async def _on_reply(self, msg: Msg) -> None:
        async with self._arrived:
            self.replies.append((msg.subject, json.loads(msg.data)))
            self._arrived.notify_all()


@contextlib.asynccontextmanager
async def nats_terminal(url: str, terminal_id: str) -> AsyncIterator[NatsTerminal]:
    """A terminal subscribed to its answer subject and everything below it."""
    nc = await nats.connect(
        url,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
        inbox_prefix=f"_INBOX.{terminal_id}",  # the gateway honours only the terminal's own
    )
    term = NatsTerminal(nc, terminal_id)
    await nc.subscribe(term.answer_subject, cb=term._on_reply)
    await nc.subscribe(term.answer_subject + ".>", cb=term._on_reply)
    await nc.flush()
    try:
        yield term
    finally:
        await nc.close()
