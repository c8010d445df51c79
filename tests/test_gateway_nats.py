"""Issue 3: the gateway on NATS (core request/reply and JetStream) against a real nats-server."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from nats.js import api

from adapters.jetstream import consumer_mismatches
from gateway.config import JetStreamConfig
from tests.brokers import NatsServer
from tests.conftest import SettingsFactory
from tests.harness import GatewayRunner
from tests.nats_terminal import nats_terminal

IN_DOMAIN = "What does alarm E203 on press P2 mean?"
OFF_TOPIC = "What is the best recipe for chocolate cake?"


def nats_overrides(server: NatsServer, *extra: str) -> list[str]:
    return [
        "nats.enabled=true",
        f'nats.servers=["{server.url}"]',
        "nats.reconnect_wait_s=0.1",
        *extra,
    ]


JETSTREAM = ("nats.mode=jetstream", "nats.jetstream.ack_wait_s=2", "nats.jetstream.max_deliver=4")


@pytest.mark.slow
async def test_core_request_reply_is_answered_with_sources(
    nats_server: NatsServer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(None, *nats_overrides(nats_server))
    async with GatewayRunner(settings) as gw, nats_terminal(nats_server.url, "t1") as t:
        reply = await t.request("n-1", IN_DOMAIN)
        assert reply["kind"] == "answer", reply
        assert reply["question_id"] == "n-1"
        assert reply["fallback"] is False
        assert any("press-p2-manual" in s["document"] for s in reply["sources"])
        assert gw.journal is not None
        assert gw.journal.model_runs("t1", "n-1") == 1
        # The request's inbox got it; nothing went to the terminal's answer subject: a plain
        # question after it is answered there, and its answer is the only message there.
        await t.nc.publish(
            t.question_subject, json.dumps({"id": "n-2", "text": OFF_TOPIC}).encode()
        )
        await t.wait_ids({"n-2"}, timeout_s=60)
        assert [(s, r["question_id"]) for s, r in t.replies] == [(t.answer_subject, "n-2")]


@pytest.mark.slow
async def test_core_reply_subject_outside_the_terminal_space_is_refused(
    nats_server: NatsServer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(None, *nats_overrides(nats_server))
    async with (
        GatewayRunner(settings),
        nats_terminal(nats_server.url, "t1") as t,
        nats_terminal(nats_server.url, "t2") as victim,
    ):
        payload = json.dumps({"id": "hijack-1", "text": OFF_TOPIC}).encode()
        await t.nc.publish(t.question_subject, payload, reply=victim.answer_subject)
        await t.wait_ids({"hijack-1"}, timeout_s=30)
        subject, reply = t.replies[0]
        assert subject == t.answer_subject
        assert reply["code"] == "forbidden_response_topic"
        # The victim's own question after it is answered on its subject, and that answer is
        # all the victim ever received: the hijacked reply did not go there.
        await victim.nc.publish(
            victim.question_subject, json.dumps({"id": "v-1", "text": OFF_TOPIC}).encode()
        )
        await victim.wait_ids({"v-1"}, timeout_s=60)
        assert [(s, r["question_id"]) for s, r in victim.replies] == [
            (victim.answer_subject, "v-1")
        ]


@pytest.mark.slow
async def test_jetstream_question_is_answered_then_acknowledged(
    nats_server: NatsServer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(None, *nats_overrides(nats_server, *JETSTREAM))
    async with GatewayRunner(settings) as gw, nats_terminal(nats_server.url, "t1") as t:
        js = t.nc.jetstream()
        info = await js.consumer_info("EDGE_plant1_QUESTIONS", "edge-gateway")
        assert (info.config.ack_wait, info.config.max_deliver) == (2.0, 4)
        assert info.config.max_ack_pending == 32
        assert await t.publish_js("js-1", IN_DOMAIN) is False
        await t.wait_ids({"js-1"})
        subject, reply = t.replies[0]
        assert subject == t.answer_subject
        assert reply["kind"] == "answer"
        assert reply["fallback"] is False
        assert any("press-p2-manual" in s["document"] for s in reply["sources"])
        for _ in range(50):  # the ack follows the answer by one round trip
            info = await js.consumer_info("EDGE_plant1_QUESTIONS", "edge-gateway")
            if info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.05)
        assert (info.num_ack_pending, info.num_pending, info.num_redelivered) == (0, 0, 0)
        stream = await js.stream_info("EDGE_plant1_QUESTIONS")
        assert stream.state.messages == 0  # work queue: acked means removed
        assert gw.journal is not None
        assert gw.journal.model_runs("t1", "js-1") == 1


@pytest.mark.slow
async def test_republished_question_with_the_same_msg_id_is_answered_once(
    nats_server: NatsServer, make_settings: SettingsFactory
) -> None:
    # A long ack wait: a JetStream redelivery of dup-1 while it is answered (2 s under load)
    # would be one more duplicate; this test counts the journal's catch of the re-publish.
    settings = make_settings(
        None, *nats_overrides(nats_server, *JETSTREAM, "nats.jetstream.ack_wait_s=60")
    )
    async with GatewayRunner(settings) as gw, nats_terminal(nats_server.url, "t1") as t:
        assert await t.publish_js("dup-1", IN_DOMAIN) is False
        assert await t.publish_js("dup-1", IN_DOMAIN) is True  # the stream's duplicate window
        await t.wait_ids({"dup-1"})
        # Same question id under another Nats-Msg-Id passes the stream: the journal catches it.
        assert await t.publish_js("dup-1", IN_DOMAIN, msg_id="t1:dup-1:again") is False
        async with asyncio.timeout(30):
            while t.count("dup-1") < 2:  # noqa: ASYNC110 - the stored answer is replayed
                await asyncio.sleep(0.05)
        # Another question after them through the same stream: its answer arrives after
        # exactly the two copies of dup-1 (the first answer and its replay), nothing else.
        assert await t.publish_js("after-dup", OFF_TOPIC) is False
        await t.wait_ids({"dup-1", "after-dup"})
        assert [r["question_id"] for _, r in t.replies] == ["dup-1", "dup-1", "after-dup"]
        assert t.replies[0][1] == t.replies[1][1]
        assert gw.journal is not None
        assert gw.journal.model_runs("t1", "dup-1") == 1
        assert gw.metrics.duplicate == 1


@pytest.mark.slow
async def test_nats_outage_longer_than_the_default_give_up_then_answers_again(
    nats_server: NatsServer, make_settings: SettingsFactory
) -> None:
    """nats-py gives up after max_reconnect_attempts (60) x reconnect_time_wait (2 s) = ~2 min
    by default. A control client with the default attempts and the gateway's short wait
    (0.1 s) measures the outage: the server stays down until the control client has given up
    for good (however long that takes on this machine), then comes back; the gateway
    (attempts = -1) must come back with it."""
    settings = make_settings(None, *nats_overrides(nats_server), "health.interval_s=0.2")
    async with GatewayRunner(settings) as gw:
        control = await nats.connect(nats_server.url, reconnect_time_wait=0.1)
        nats_server.stop()
        async with asyncio.timeout(180):
            while not control.is_closed:  # noqa: ASYNC110 - the default give-up, by count
                await asyncio.sleep(0.05)
        assert gw.adapters["nats"].connected is False
        nats_server.start()
        async with asyncio.timeout(30):
            while not gw.adapters["nats"].connected:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        async with nats_terminal(nats_server.url, "t1") as t:
            reply = await t.request("after-outage", OFF_TOPIC, timeout_s=30)
            assert reply["fallback"] is True
            health = gw.adapters["nats"].health()
            assert health.connected is True
            assert health.reconnects >= 1
            assert health.disconnects >= 1
            sub = await t.nc.subscribe("edge.plant1.gateway.gw1.health")
            published = json.loads((await sub.next_msg(timeout=5)).data)
            assert published["buses"]["nats"]["reconnects"] >= 1


def test_consumer_read_back_reports_every_disagreement() -> None:
    cfg = JetStreamConfig(ack_wait_s=30, max_deliver=5, max_ack_pending=32, backoff_s=[1, 5])
    good = api.ConsumerConfig(
        ack_wait=1.0,  # the server sets AckWait to the first backoff step
        max_deliver=5,
        max_ack_pending=32,
        backoff=[1.0, 5.0],
        ack_policy=api.AckPolicy.EXPLICIT,
    )
    assert consumer_mismatches(cfg, good) == []
    bad = api.ConsumerConfig(
        ack_wait=30.0, max_deliver=-1, max_ack_pending=1000, ack_policy=api.AckPolicy.EXPLICIT
    )
    problems = consumer_mismatches(cfg, bad)
    assert len(problems) == 4, problems
