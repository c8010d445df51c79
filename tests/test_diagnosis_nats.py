"""Issue 4 on NATS: device events on subjects, diagnoses on subjects, and the current state kept
by a JetStream last-value stream (NATS's retained messages) for a SCADA client that comes later."""

from __future__ import annotations

import json

import nats
import pytest

from models.diagnosis import Diagnosis
from tests.brokers import NatsServer
from tests.conftest import SettingsFactory
from tests.devices import event, eventually
from tests.harness import GatewayRunner
from tests.test_gateway_nats import JETSTREAM, nats_overrides

pytestmark = pytest.mark.slow

FAST = ("diagnosis.coalesce_window_s=0", "diagnosis.max_tokens=200", "diagnosis.temperature=0")
STATE_STREAM = "EDGE_plant1_STATE"


async def test_nats_alarm_is_diagnosed_and_its_state_kept_for_late_subscribers(
    nats_server: NatsServer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(None, *nats_overrides(nats_server, *JETSTREAM), *FAST)
    async with GatewayRunner(settings) as gw:
        nc = await nats.connect(nats_server.url)
        try:
            live = await nc.subscribe("edge.plant1.diagnosis.>")
            await nc.publish(
                "edge.plant1.device.P2.event",
                event("alarm_raised", "E203", "critical", text="Pressure build-up too slow"),
            )
            await nc.publish("edge.plant1.device.P2.event", b'{"kind": "alarm_raised"}')
            # An alarm code with a dot is one subject token, its '.' written '~'
            # (gateway/diagnosis/addresses.py); the payload keeps the code as it is.
            await nc.publish("edge.plant1.device.C3.event", event("alarm_raised", "TT-101.high"))
            seen: dict[str, Diagnosis] = {}
            while len(seen) < 4:
                msg = await live.next_msg(timeout=300)
                seen[msg.subject] = Diagnosis.model_validate_json(msg.data)
            diagnosis = seen["edge.plant1.diagnosis.P2.E203"]
            assert diagnosis.fallback is False
            assert diagnosis.state == "active"
            assert "press-p2-manual" in diagnosis.sources[0].document
            assert seen["edge.plant1.diagnosis.C3.TT-101~high"].alarm_code == "TT-101.high"
            assert gw.diagnosis is not None
            diag = gw.diagnosis
            await eventually(lambda: diag.metrics.events_rejected >= 1, 10)

            await nc.publish("edge.plant1.device.P2.event", event("alarm_cleared", "E203"))
            while True:
                msg = await live.next_msg(timeout=60)
                if msg.subject == "edge.plant1.diagnosis.P2" and b'"cleared"' in msg.data:
                    break
        finally:
            await nc.close()

    # The gateway is gone; a SCADA client connecting now reads the current state per subject.
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(STATE_STREAM)
        assert info.config.max_msgs_per_subject == 1
        headline = await js.get_last_msg(STATE_STREAM, "edge.plant1.diagnosis.P2")
        assert json.loads(headline.data)["state"] == "cleared"
        alarm = await js.get_last_msg(STATE_STREAM, "edge.plant1.diagnosis.P2.E203")
        assert Diagnosis.model_validate_json(alarm.data).state == "cleared"
        dotted = await js.get_last_msg(STATE_STREAM, "edge.plant1.diagnosis.C3.TT-101~high")
        assert Diagnosis.model_validate_json(dotted.data).alarm_code == "TT-101.high"
    finally:
        await nc.close()
