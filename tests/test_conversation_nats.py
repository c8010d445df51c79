"""Conversations behind a NATS queue group (issue 12, item 5): a follow-up that reaches another
instance than the question before it continues the conversation, because the turns are shared
through a JetStream key-value bucket, not through a cluster of our own.

Two gateways with their own journals share a real nats-server. Turn 1 is answered by one of
them; that one is stopped, so the server hands turn 2 to the other, whose journal has never
seen the conversation. With the bucket it answers in context; with the bucket turned off
(`conversation.nats_bucket = ""`, what an MQTT-only deployment has) it answers alone.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import nats
import pytest

from gateway.config import Settings
from tests.brokers import NatsServer
from tests.conftest import SettingsFactory
from tests.harness import GatewayRunner

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FIRST = "What does alarm E203 on press P2 mean?"
FIX = "And how do I fix it?"


def journal_ids(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return {row[0] for row in db.execute("SELECT question_id FROM questions")}


async def ask(url: str, qid: str, text: str) -> dict[str, Any]:
    nc = await nats.connect(url, inbox_prefix=b"_INBOX.t1")
    try:
        payload = {"id": qid, "text": text, "conversation_id": "c1"}
        msg = await nc.request("edge.plant1.question.t1", json.dumps(payload).encode(), timeout=240)
    finally:
        await nc.close()
    reply: dict[str, Any] = json.loads(msg.data)
    assert reply["kind"] == "answer", reply
    return reply


@pytest.mark.parametrize(
    "bucket", ["EDGE_{site}_CONVERSATIONS", ""], ids=["shared", "per-instance"]
)
async def test_a_follow_up_at_another_instance_continues_the_conversation(
    bucket: str,
    nats_server: NatsServer,
    make_settings: SettingsFactory,
    demo_kb_file: Path,
    tmp_path: Path,
) -> None:
    settings: list[Settings] = []
    for i in (1, 2):
        data = tmp_path / f"gw{i}"
        data.mkdir()
        shutil.copy(demo_kb_file, data / "kb.sqlite3")
        settings.append(
            make_settings(
                None,
                "nats.enabled=true",
                f"nats.servers={nats_server.url}",
                "answer.mode=extractive",
                f"conversation.nats_bucket={bucket}",
                f"instance=gw{i}",
                f"data_dir={data}",
                "worker.n_threads=1",
            )
        )
    runners = [GatewayRunner(s) for s in settings]
    try:
        for runner in runners:
            await runner.start()
        first = await ask(nats_server.url, "q1", FIRST)
        assert first["history_turns"] == 0
        (answered_by,) = [i for i, s in enumerate(settings) if "q1" in journal_ids(s.journal_path)]
        await runners[answered_by].stop()
        other = 1 - answered_by

        fix = await ask(nats_server.url, "q2", FIX)
        assert journal_ids(settings[other].journal_path) == {"q2"}  # never saw turn 1 itself
        if bucket:
            assert fix["history_turns"] == 1
            assert "E203" in fix["sources"][0]["section"], fix["sources"]
        else:
            assert fix["history_turns"] == 0
            assert not fix["sources"] or "E203" not in fix["sources"][0]["section"]
    finally:
        for runner in runners:
            await runner.stop()
