"""The shipped configs/nats-server.conf: valid for the installed server, JetStream on, and its
per-user permissions hold (a terminal publishes only its own questions, reads only its replies)."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path

import nats
import nats.errors

from tests.brokers import NatsServer

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "configs" / "nats-server.conf"


def test_shipped_nats_config_is_valid_for_the_installed_server() -> None:
    result = subprocess.run(
        ["nats-server", "-c", str(SHIPPED), "-t"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


async def test_shipped_permissions_confine_terminals(tmp_path: Path) -> None:
    conf = tmp_path / "nats-server.conf"
    text = SHIPPED.read_text()
    text = re.sub(r'store_dir: ".*"', f'store_dir: "{tmp_path / "js"}"', text)
    conf.write_text(text)
    server = NatsServer(tmp_path / "nats", conf=conf)
    server.start()
    errors: list[str] = []

    async def record(exc: Exception) -> None:
        errors.append(str(exc))

    try:
        gateway = await nats.connect(
            server.url, user="gateway", password="change-me-gateway", error_cb=record
        )
        terminal = await nats.connect(
            server.url,
            user="t1",
            password="change-me-t1",
            inbox_prefix="_INBOX.t1",
            error_cb=record,
        )
        received: list[str] = []

        async def answer(msg: nats.aio.msg.Msg) -> None:
            received.append(msg.subject)
            await msg.respond(b'{"kind": "answer"}')

        await gateway.subscribe("edge.plant1.question.*", queue="edge-gateway", cb=answer)
        # JetStream API allowed (a stream on the question subjects would itself answer requests
        # with its PubAck, so this one captures another subject).
        await gateway.jetstream().add_stream(name="PERMS", subjects=["edge.plant1.answer.perms"])
        await gateway.flush()
        reply = await terminal.request("edge.plant1.question.t1", b"{}", timeout=5)
        assert reply.data == b'{"kind": "answer"}'  # allow_responses reached t1's own inbox
        await terminal.publish("edge.plant1.question.t2", b"{}")  # someone else's subject
        await terminal.subscribe("edge.plant1.answer.t2")  # someone else's answers
        await terminal.flush()
        await asyncio.sleep(0.3)
        assert received == ["edge.plant1.question.t1"]
        violations = [e for e in errors if "permissions violation" in e.lower()]
        assert any("edge.plant1.question.t2" in e for e in violations), errors
        assert any("edge.plant1.answer.t2" in e for e in violations), errors
        await terminal.close()
        await gateway.close()
    finally:
        server.stop()
