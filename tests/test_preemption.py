"""A question never waits behind a routine diagnosis: a warning diagnosis that is generating
when a question arrives stops between two tokens, the question is answered, and the diagnosis
runs again afterwards and is published once. A critical diagnosis is not preempted. Real
mosquitto, the real model and demo KB, in process (the worker's state is read to ask the
question while the diagnosis is generating)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from gateway.app import Gateway
from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.devices import Scada, device_client, event, event_topic, eventually, scada
from tests.harness import GatewayRunner, Terminal, terminal

pytestmark = pytest.mark.slow

SETTINGS = (
    "diagnosis.coalesce_window_s=0",
    "diagnosis.max_tokens=200",
    "diagnosis.temperature=0",
    "answer.mode=extractive",
)
ALARM = "edge/plant1/diagnosis/P2/E203"
QUESTION = "How do I replace the return filter on P2?"


async def alarm_then_question(
    gw: Gateway, s: Scada, t: Terminal, port: int, severity: str
) -> tuple[int, int]:
    """Raise E203 with `severity`, ask the question while its diagnosis is generating; the
    diagnoses published when the answer arrived, and the preemptions counted then."""
    assert gw.worker is not None
    assert gw.diagnosis is not None
    worker, diagnosis = gw.worker, gw.diagnosis
    async with device_client(port) as device:
        await device.publish(event_topic("P2"), event("alarm_raised", "E203", severity), qos=1)
        await eventually(lambda: worker.current_op == "generate", 60)
        answer = await t.wait_for(await t.ask(QUESTION, qid="during-diagnosis"), 120)
        at_answer = (diagnosis.metrics.published, diagnosis.metrics.preempted)
        assert answer.json["kind"] == "answer"
        await s.wait_for(ALARM, timeout_s=120)
        # A later alarm (no model: unknown code) proves delivery; E203 came exactly once.
        await device.publish(event_topic("P2"), event("alarm_raised", "X9", "info"), qos=1)
        await s.wait_for("edge/plant1/diagnosis/P2/X9", timeout_s=60)
    assert len(s.on(ALARM)) == 1
    return at_answer


@contextlib.asynccontextmanager
async def gateway_scada_terminal(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> AsyncIterator[tuple[Gateway, Scada, Terminal]]:
    settings = make_settings(mosquitto, *SETTINGS)
    async with (
        GatewayRunner(settings) as gw,
        scada(mosquitto.port) as s,
        terminal(mosquitto.port, "t1") as t,
    ):
        yield gw, s, t


async def test_a_warning_diagnosis_gives_way_to_a_question_and_is_published_once_after(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    async with gateway_scada_terminal(mosquitto, make_settings) as (gw, s, t):
        published, preempted = await alarm_then_question(gw, s, t, mosquitto.port, "warning")
        assert (published, preempted) == (0, 1), "answered while the diagnosis was put back"
        assert gw.diagnosis is not None
        assert gw.diagnosis.metrics.model_runs == 1, "the preempted run is not a finished one"
        assert s.on(ALARM)[0]["state"] == "active"
        assert s.on(ALARM)[0]["fallback"] is False


async def test_a_critical_diagnosis_is_not_preempted(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    async with gateway_scada_terminal(mosquitto, make_settings) as (gw, s, t):
        published, preempted = await alarm_then_question(gw, s, t, mosquitto.port, "critical")
        assert (published, preempted) == (1, 0), "the critical diagnosis finished first"
