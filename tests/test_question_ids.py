"""Questions without an id of their own: a redelivery collapses onto the stored answer, the same
text asked again after `journal.unnamed_dedup_s` is answered afresh; a terminal's own id stays
deduplicated for the journal's whole retention. Real mosquitto, MQTT 3.1.1 (no correlation data,
so the gateway's key is the payload hash)."""

from __future__ import annotations

import json

import aiomqtt
import pytest

from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.harness import GatewayRunner, terminal

pytestmark = pytest.mark.slow

NO_ID = json.dumps({"text": "How do I replace the return filter on P2?"}).encode()
V311 = aiomqtt.ProtocolVersion.V311


async def test_a_question_without_id_is_answered_afresh_after_the_window(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    wide = make_settings(mosquitto, "answer.mode=extractive", "journal.unnamed_dedup_s=3600")
    async with GatewayRunner(wide), terminal(mosquitto.port, "t1", protocol=V311) as t:
        await t.ask(payload=NO_ID)
        (first,) = await t.wait_count(1)
        await t.ask(payload=NO_ID)
        await t.ask("same id, asked twice", qid="own-1")
        replies = await t.wait_count(3)
        resent = next(r for r in replies[1:] if r.json["question_id"] == first.json["question_id"])
        own = next(r for r in replies[1:] if r.json["question_id"] == "own-1")
        assert resent.payload == first.payload, "within the window: the stored answer, resent"
        assert first.json["question_id"].startswith("h-")
        assert len(replies) == 3

    # Restarted with a window already over: the unnamed question is new, the named one is not.
    narrow = make_settings(mosquitto, "answer.mode=extractive", "journal.unnamed_dedup_s=0.001")
    async with GatewayRunner(narrow) as gw, terminal(mosquitto.port, "t1", protocol=V311) as t:
        await t.ask(payload=NO_ID)
        (fresh,) = await t.wait_count(1)
        await t.ask("same id, asked twice", qid="own-1")
        replies = await t.wait_count(2)
        assert len(replies) == 2
        assert fresh.json["question_id"] == first.json["question_id"]
        assert fresh.json["kind"] == "answer"
        assert fresh.payload != first.payload, "answered afresh, not the stored answer"
        assert fresh.json["answered_at"] > first.json["answered_at"]
        assert replies[1].payload == own.payload, "an id of its own is still deduplicated"
        assert gw.journal is not None
        assert gw.metrics.duplicate == 1
