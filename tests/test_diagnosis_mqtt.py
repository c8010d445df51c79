"""Issue 4 end to end: device events over real mosquitto, the real model, the real demo KB."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from models.diagnosis import Diagnosis
from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.devices import device_client, event, event_topic, eventually, publish_paced, scada
from tests.harness import GatewayRunner, terminal

pytestmark = pytest.mark.slow

SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "models/schemas/diagnosis.schema.json").read_text()
)
FAST = ("diagnosis.coalesce_window_s=0", "diagnosis.max_tokens=200", "diagnosis.temperature=0")


def assert_valid(payload: dict[str, Any]) -> Diagnosis:
    """Valid against the committed JSON Schema's shape and the strict model it was made from."""
    assert set(SCHEMA["required"]) <= payload.keys() <= SCHEMA["properties"].keys()
    return Diagnosis.model_validate_json(json.dumps(payload))


async def test_documented_alarm_is_diagnosed_retained_and_cleared(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    settings = make_settings(mosquitto, *FAST)
    async with GatewayRunner(settings) as gw, device_client(mosquitto.port) as dev:
        await dev.publish(
            event_topic("P2"),
            event("alarm_raised", "E203", "critical", text="Pressure build-up too slow"),
            qos=1,
        )
        # A SCADA client that connects after the fact still gets the current state (retained).
        assert gw.diagnosis is not None
        diag = gw.diagnosis
        await eventually(lambda: diag.metrics.published >= 1, 120)
        async with scada(mosquitto.port) as late:
            d = await late.wait_for("edge/plant1/diagnosis/P2")
            per_alarm = await late.wait_for("edge/plant1/diagnosis/P2/E203")
        assert all(retained for _, _, retained in late.received)
        diagnosis = assert_valid(d)
        assert per_alarm == d
        assert diagnosis.fallback is False, d
        assert diagnosis.state == "active"
        assert diagnosis.severity == "critical"
        assert diagnosis.probable_causes
        assert diagnosis.recommended_actions
        assert diagnosis.model
        assert 0.0 <= diagnosis.confidence <= 1.0
        assert "press-p2-manual" in diagnosis.sources[0].document
        assert any("E203" in s.section for s in diagnosis.sources), diagnosis.sources
        assert gw.diagnosis.metrics.model_runs == 1

        async with scada(mosquitto.port) as s:
            await s.wait_for("edge/plant1/diagnosis/P2", state="active")
            await dev.publish(event_topic("P2"), event("alarm_cleared", "E203", "critical"), qos=1)
            cleared = await s.wait_for("edge/plant1/diagnosis/P2", state="cleared")
            await s.wait_for("edge/plant1/diagnosis/P2/E203", state="cleared")
        assert assert_valid(cleared).summary == diagnosis.summary
        async with scada(mosquitto.port) as late:
            assert (await late.wait_for("edge/plant1/diagnosis/P2"))["state"] == "cleared"
        assert gw.diagnosis.metrics.model_runs == 1


async def test_undocumented_code_gets_the_fallback_without_the_model(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    settings = make_settings(mosquitto, *FAST)
    async with (
        GatewayRunner(settings) as gw,
        scada(mosquitto.port) as s,
        device_client(mosquitto.port) as dev,
    ):
        await dev.publish(
            event_topic("P2"), event("alarm_raised", "X977", text="Unknown fault"), qos=1
        )
        await dev.publish(event_topic("P2"), b'{"kind": "alarm_raised"}', qos=1)
        d = assert_valid(await s.wait_for("edge/plant1/diagnosis/P2/X977"))
        assert d.fallback is True
        assert d.sources == ()
        assert d.model == ""
        assert "contact" in d.summary.lower()
        assert gw.diagnosis is not None
        assert gw.diagnosis.metrics.model_runs == 0
        diag = gw.diagnosis
        await eventually(lambda: diag.metrics.events_rejected >= 1, 10)


PRESS = ("E101", "E203", "E305", "E410", "E512", "W020")
CONVEYOR = ("C-12", "C-25", "C-40", "C-51")


async def test_twenty_alarms_from_the_real_model_all_validate(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    settings = make_settings(mosquitto, *FAST, "diagnosis.rate_burst=20")
    alarms = [(dev, code) for dev in ("P2", "P2-B") for code in PRESS] + [
        (dev, code) for dev in ("C3", "C3-B") for code in CONVEYOR
    ]
    assert len(set(alarms)) == 20
    async with (
        GatewayRunner(settings) as gw,
        scada(mosquitto.port) as s,
        device_client(mosquitto.port) as dev,
    ):
        started = time.monotonic()
        for device, code in alarms:
            await dev.publish(event_topic(device), event("alarm_raised", code), qos=1)
        results = [
            await s.wait_for(f"edge/plant1/diagnosis/{device}/{code}", timeout_s=600)
            for device, code in alarms
        ]
        elapsed = time.monotonic() - started
        diagnoses = [assert_valid(r) for r in results]
        assert gw.diagnosis is not None
        m = gw.diagnosis.metrics
        print(
            f"\n20 diagnoses in {elapsed:.1f} s ({elapsed / 20:.2f} s each); "
            f"model runs {m.model_runs}, invalid {m.invalid_output}, fallback {m.fallback}"
        )
        assert m.invalid_output == 0
        assert all(not d.fallback for d in diagnoses), [
            d.alarm_code for d in diagnoses if d.fallback
        ]
        assert m.model_runs == 20


async def test_flood_coalesces_per_window_and_questions_still_get_answered(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    """10,000 events in 10 s, 5 devices x 3 codes. Each window of a (device, code) yields one
    diagnosis whose repeat_count is the events in it, so the counts add up to what was sent;
    the windows (12 s) are longer than the flood, but a window also lasts until its diagnosis is
    ready, so on a slow machine a key may need a second window, never more than one per 12 s."""
    window_s = 12.0
    settings = make_settings(
        mosquitto,
        f"diagnosis.coalesce_window_s={window_s}",
        "diagnosis.max_tokens=200",
        "diagnosis.temperature=0",
        "worker.request_timeout_s=180",  # shared 2-core machine: a generation may be slow
    )
    devices = [f"M{i}" for i in range(5)]
    codes = {"E203": "critical", "X901": "critical", "W777": "warning"}
    messages = []
    sent: dict[tuple[str, str], int] = {}
    for i in range(10_000):
        device, code = devices[i % 5], list(codes)[(i // 5) % 3]
        messages.append((event_topic(device), event("alarm_raised", code, codes[code])))
        sent[(device, code)] = sent.get((device, code), 0) + 1
    process = psutil.Process()

    def topic(key: tuple[str, str]) -> str:
        return f"edge/plant1/diagnosis/{key[0]}/{key[1]}"

    async with (
        GatewayRunner(settings) as gw,
        scada(mosquitto.port) as s,
        terminal(mosquitto.port, "t1") as t,
    ):
        rss_before = process.memory_info().rss
        flood = asyncio.create_task(asyncio.to_thread(publish_paced, mosquitto.port, messages, 10))
        await asyncio.sleep(2)
        qid = await t.ask("What does alarm E203 on press P2 mean?")
        answer = (await t.wait_for(qid, timeout_s=300)).json
        took = await flood
        rss_peak = process.memory_info().rss

        def counted(key: tuple[str, str]) -> int:
            return sum(d["repeat_count"] for d in s.on(topic(key)))

        await s.wait_until(lambda: all(counted(k) >= n for k, n in sent.items()), 300)
        await asyncio.sleep(1.0)  # nothing more may arrive
        assert gw.diagnosis is not None
        m = gw.diagnosis.metrics
        windows = 0
        for key, n in sent.items():
            assert counted(key) == n, (key, [d["repeat_count"] for d in s.on(topic(key))], n)
            times = s.times(topic(key))
            windows += len(times)
            assert all(b - a >= window_s - 0.5 for a, b in itertools.pairwise(times)), key
            assert all(d["cached"] for d in s.on(topic(key))[1:]), key
        assert answer["kind"] == "answer", answer
        assert m.events_received == 10_000
        assert m.coalesced == 10_000 - windows
        assert m.dropped_overflow == m.dropped_rate_limited == m.events_rejected == 0
        assert m.model_runs == 5  # E203 once per device; X901/W777 are not in the KB
        growth = rss_peak - rss_before
        print(
            f"\nflood: 10,000 events published in {took:.1f} s; {windows} windows for 15 keys; "
            f"RSS {rss_before / 2**20:.0f} -> {rss_peak / 2**20:.0f} MiB; question answered in "
            f"{answer['latency']['total_ms'] / 1000:.1f} s"
        )
        assert growth < 150 * 2**20
