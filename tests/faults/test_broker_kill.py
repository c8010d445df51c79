"""Issue 6, item 1: mosquitto `kill -9` in the middle of 1,000 QoS 1 questions, restarted after
2 s from the shipped configuration (configs/mosquitto.conf, same port and store).

Terminals and the answer listener are real MQTT clients with persistent sessions: what they had
not got acknowledged they resend after the broker is back, as a handheld would. The gateway
runs in-process (the broker dies, not the gateway). Every id must be answered, copies on the
wire byte-identical to the stored reply, and the model must have run exactly once per id it was
needed for (in-domain) and never for fallbacks.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.faults.bus import MqttClient
from tests.faults.conftest import mixed_texts, record, scaled
from tests.faults.ledger import account, runs_by_outcome
from tests.harness import GatewayRunner

pytestmark = pytest.mark.timeout(900)
TERMINALS = 10


async def test_broker_sigkill_mid_stream_loses_nothing(
    mosquitto: Mosquitto, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    total = scaled(1000, minimum=20)
    texts = mixed_texts(total, every=50)
    settings = make_settings(
        mosquitto,
        "worker.max_tokens=8",
        "kb.top_k=1",
        "queue.max_depth=5000",
        "mqtt.reconnect_max_s=1",
    )
    keys = [(f"t{i % TERMINALS}", f"bk-{i}") for i in range(total)]
    started = time.monotonic()
    async with GatewayRunner(settings) as gw:
        with (
            MqttClient(mosquitto.port, subscribe=("edge/plant1/terminal/+/answer/#",)) as ears,
            MqttClient(mosquitto.port) as mouth,
        ):
            half = total // 2
            for (terminal, qid), text in zip(keys[:half], texts[:half], strict=True):
                mouth.ask("plant1", terminal, qid, text)
                await asyncio.sleep(0.002)
            # Kill while the gateway is busy: some answered, most still queued or in flight.
            await asyncio.to_thread(
                ears.wait, lambda: len(ears.question_ids()) >= half // 5, 300, "first answers"
            )
            answered_before = len(ears.question_ids())
            mosquitto.stop(kill=True)
            killed_at = time.monotonic()
            # The second half is "published" while the broker is down: paho keeps them.
            for (terminal, qid), text in zip(keys[half:], texts[half:], strict=True):
                mouth.ask("plant1", terminal, qid, text)
            await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - killed_at)))
            mosquitto.start()
            await asyncio.to_thread(ears.wait_ids, {q for _, q in keys}, 600)
            await asyncio.sleep(1.0)  # late duplicates, if any, arrive now
            replies = ears.snapshot()
            assert gw.journal is not None
            journal_path = gw.journal.path
            reconnects = gw.adapters["mqtt"].health().reconnects
    figures = account("broker kill -9", keys, replies, [journal_path])
    figures.extra.update(
        answered_before_kill=answered_before,
        gateway_reconnects=reconnects,
        wall_s=round(time.monotonic() - started, 1),
    )
    record(figures)
    assert 0 < answered_before < total, "the kill did not land mid-stream"
    assert reconnects >= 1
    assert figures.missing == []
    assert figures.not_identical == []
    assert figures.kinds == {"answer": total}
    # The model ran once per question it was needed for, and never for a fallback.
    assert runs_by_outcome(journal_path) == {"model": {1}, "fallback": {0}}
