"""Issue 2 end to end: real mosquitto, real llama.cpp worker, real sqlite-vec knowledge base."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable

import aiomqtt
import pytest

from tests.brokers import Mosquitto
from tests.confinement import assert_machine_confinement
from tests.conftest import SettingsFactory
from tests.harness import GatewayRunner, terminal

pytestmark = pytest.mark.slow

IN_DOMAIN = "What does alarm E203 on press P2 mean?"
OFF_TOPIC = "What is the best recipe for chocolate cake?"


async def until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll until `predicate()` holds (the timeout is a bound, not a measurement)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling lists fed by the terminals' tasks
            await asyncio.sleep(0.02)


async def test_in_domain_question_is_answered_with_the_right_source(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    async with GatewayRunner(make_settings(mosquitto)) as gw, terminal(mosquitto.port, "t1") as t:
        qid = await t.ask(IN_DOMAIN)
        reply = (await t.wait_for(qid)).json
        assert reply["kind"] == "answer"
        assert reply["fallback"] is False
        assert reply["text"].strip()
        assert reply["usage"]["completion_tokens"] > 0
        assert reply["sources"], reply
        assert "press-p2-manual" in reply["sources"][0]["document"]
        assert any("E203" in s["section"] for s in reply["sources"]), reply["sources"]
        assert gw.journal is not None
        assert gw.journal.model_runs("t1", qid) == 1


async def test_off_topic_question_gets_the_fallback_without_the_model(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    settings = make_settings(mosquitto, "kb.fallback_text=Ask the shift lead.")
    async with GatewayRunner(settings) as gw, terminal(mosquitto.port, "t1") as t:
        qid = await t.ask(OFF_TOPIC)
        reply = (await t.wait_for(qid)).json
        assert reply["fallback"] is True
        assert reply["text"] == "Ask the shift lead."
        assert reply["sources"] == []
        assert gw.journal is not None
        assert gw.journal.model_runs("t1", qid) == 0


async def test_mqtt5_request_response_with_correlation_data(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    async with GatewayRunner(make_settings(mosquitto)), terminal(mosquitto.port, "t1") as t:
        response_topic = t.answer_topic + "/rr-42"
        correlation = b"\x00\x01corr\xff"
        qid = await t.ask(IN_DOMAIN, response_topic=response_topic, correlation=correlation)
        reply = await t.wait_for(qid)
        assert reply.topic == response_topic
        assert reply.correlation == correlation
        assert reply.json["kind"] == "answer"


async def test_response_topic_outside_own_prefix_is_refused(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    async with (
        GatewayRunner(make_settings(mosquitto)),
        terminal(mosquitto.port, "spy", subscribe=("#",)) as spy,
        terminal(mosquitto.port, "t1") as t,
    ):
        for hostile in (
            "edge/plant1/terminal/t2/answer",
            "edge/plant1/diagnosis/P2",
            "edge/plant1/terminal/t1/answerX",
            "edge/plant1/terminal/t1/answer/+",
        ):
            qid = await t.ask(IN_DOMAIN, response_topic=hostile)
            reply = await t.wait_for(qid)
            assert reply.topic == t.answer_topic
            assert reply.json["code"] == "forbidden_response_topic"
        # A valid question after them: once its answer has reached the spy, anything the
        # gateway published for the refused ones (earlier, on the same connection) has too.
        last = await t.ask(OFF_TOPIC)
        assert (await t.wait_for(last)).topic == t.answer_topic
        await spy.wait_for(last)
        # The spy saw the questions, the replies on t1's own answer topic and the gateway's
        # status and health: nothing else.
        gateway = {"edge/plant1/gateway/gw1/status", "edge/plant1/gateway/gw1/health"}
        written = {r.topic for r in spy.replies} - gateway
        assert written == {t.question_topic, t.answer_topic}, written


async def test_questions_sent_while_gateway_is_down_are_answered_after_start(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    runner = GatewayRunner(make_settings(mosquitto))
    await runner.start()  # creates the persistent session and its subscription
    await runner.stop()
    async with terminal(mosquitto.port, "t1") as t:
        qids = [await t.ask(f"{IN_DOMAIN} ({i})") for i in range(3)]
        # Nothing answers while the gateway is down: a probe the terminal publishes on its own
        # answer topic after the questions arrives, and it is all that arrived.
        probe = json.dumps({"question_id": "probe"}).encode()
        await t.client.publish(t.answer_topic + "/probe", probe, qos=1)
        await t.wait_for("probe")
        assert [r.payload for r in t.replies] == [probe]
        async with runner:
            for qid in qids:
                assert (await t.wait_for(qid)).json["kind"] == "answer"
        # One answer per question, after the probe.
        assert sorted(r.json["question_id"] for r in t.replies[1:]) == sorted(qids)


async def test_duplicate_delivery_runs_the_model_once(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    async with GatewayRunner(make_settings(mosquitto)) as gw, terminal(mosquitto.port, "t1") as t:
        payload = json.dumps({"id": "dup-1", "text": IN_DOMAIN}).encode()
        await t.ask(qid="dup-1", payload=payload)
        await t.ask(qid="dup-1", payload=payload)
        first = await t.wait_for("dup-1")
        await t.ask(qid="dup-1", payload=payload)  # after the answer: replayed from the journal
        replies = await t.wait_count(2)
        assert gw.journal is not None
        assert gw.journal.model_runs("t1", "dup-1") == 1
        assert all(r.payload == first.payload for r in replies)
        assert gw.metrics.duplicate == 2


BAD_INPUTS = {
    b"\xff\xfe garbage": "invalid_encoding",
    b"{not json": "invalid_json",
    b"[" * 100 + b"]" * 100: "invalid_json",
    b'{"id": "bad-nan", "text": NaN}': "invalid_json",
    b'{"id": "bad-dup", "text": "a", "text": "b"}': "invalid_json",
    b'{"id": "bad-huge", "text": "a", "n": 1' + b"0" * 400 + b"}": "invalid_json",
    b'{"id": "bad-sur", "text": "\\udc00"}': "invalid_encoding",
    b'{"id": "bad-nul", "text": "a\\u0000"}': "invalid_question",
    b'{"id": "bad-schema", "text": "ok", "extra": 1}': "invalid_question",
    b'{"id": "bad-empty", "text": ""}': "invalid_question",
    b'{"id": "bad-long", "text": "' + b"x" * 3000 + b'"}': "invalid_question",
    b"x" * 20_000: "payload_too_large",
}


async def test_every_bad_input_gets_an_error_reply_and_the_next_question_is_answered(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    async with GatewayRunner(make_settings(mosquitto)) as gw, terminal(mosquitto.port, "t1") as t:
        for payload in BAD_INPUTS:
            await t.client.publish(t.question_topic, payload, qos=1)
        replies = await t.wait_count(len(BAD_INPUTS))
        codes = [r.json["code"] for r in replies]
        assert sorted(codes) == sorted(BAD_INPUTS.values())
        assert all(r.topic == t.answer_topic for r in replies)
        assert gw.metrics.rejected == len(BAD_INPUTS)
        qid = await t.ask(IN_DOMAIN)
        assert (await t.wait_for(qid)).json["kind"] == "answer"


async def test_worker_killed_mid_question_gives_error_then_recovers(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    settings = make_settings(mosquitto, "worker.max_tokens=400")
    async with GatewayRunner(settings) as gw, terminal(mosquitto.port, "t1") as t:
        assert gw.worker is not None
        pid = gw.worker.health().pid
        assert pid is not None
        qid = await t.ask(IN_DOMAIN + " Explain every step in detail.")
        while gw.metrics.model_runs == 0:  # noqa: ASYNC110 - polling a plain counter
            await asyncio.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        reply = (await t.wait_for(qid)).json
        assert reply["kind"] == "error"
        assert reply["code"] in {"worker_failed", "worker_oom"}
        assert reply["retryable"] is True
        qid2 = await t.ask(IN_DOMAIN)
        assert (await t.wait_for(qid2)).json["kind"] == "answer"
        assert gw.worker.health().pid not in (None, pid)
        assert gw.worker.health().restarts >= 1


async def test_expired_question_gets_expired_reply(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    async with GatewayRunner(make_settings(mosquitto)) as gw, terminal(mosquitto.port, "t1") as t:
        assert gw.worker is not None
        pid = gw.worker.health().pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # hold the first question so the second waits in the queue
        try:
            first = await t.ask(IN_DOMAIN)
            second = await t.ask(IN_DOMAIN + " (urgent)", expiry_s=1)
            await asyncio.sleep(1.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert (await t.wait_for(first)).json["kind"] == "answer"
        reply = (await t.wait_for(second)).json
        assert reply["code"] == "expired"
        assert gw.metrics.expired == 1


async def test_full_queue_answers_busy_at_once(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    settings = make_settings(mosquitto, "queue.max_depth=1")
    async with GatewayRunner(settings) as gw, terminal(mosquitto.port, "t1") as t:
        assert gw.worker is not None
        pid = gw.worker.health().pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            qids = [await t.ask(f"{IN_DOMAIN} #{i}") for i in range(5)]
            replies = await t.wait_count(
                3, timeout_s=20
            )  # at least 3 busy while the worker is held
            assert all(r.json["code"] == "busy" for r in replies)
            assert all(r.json["retryable"] for r in replies)
        finally:
            os.kill(pid, signal.SIGCONT)
        kinds = [(await t.wait_for(q)).json.get("code", "answer") for q in qids]
        assert kinds.count("answer") + kinds.count("busy") == 5
        assert kinds.count("busy") == gw.metrics.busy >= 3


async def test_mqtt_311_answers_on_the_terminal_topic(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    settings = make_settings(mosquitto, "mqtt.protocol=3.1.1")
    async with (
        GatewayRunner(settings),
        terminal(mosquitto.port, "t9", protocol=aiomqtt.ProtocolVersion.V311) as t,
    ):
        qid = await t.ask(IN_DOMAIN)
        reply = await t.wait_for(qid)
        assert reply.topic == t.answer_topic
        assert reply.json["kind"] == "answer"


async def test_status_and_health_are_retained(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    runner = GatewayRunner(make_settings(mosquitto))
    await runner.start()
    health_topic = "edge/plant1/gateway/gw1/health"
    async with (
        terminal(mosquitto.port, "t1") as t,
        terminal(mosquitto.port, "watch", subscribe=(health_topic,)) as watch,
    ):
        qid = await t.ask(OFF_TOPIC)
        await t.wait_for(qid)
        # Waited for by content, not by time: a report published after the fallback.
        await until(lambda: any(r.json["counters"]["fallback"] >= 1 for r in watch.replies))
    async with terminal(mosquitto.port, "ops", subscribe=("edge/plant1/gateway/gw1/#",)) as ops:
        await ops.wait_count(2)
        by_topic = {r.topic: r.json for r in ops.replies}
        assert by_topic["edge/plant1/gateway/gw1/status"]["state"] == "online"
        health = by_topic[health_topic]
        assert health["counters"]["received"] >= 1
        assert health["counters"]["fallback"] >= 1
        assert health["worker"]["state"] == "ready"
        assert_machine_confinement(health["worker"]["confinement"])
        assert health["buses"]["mqtt"]["connected"] is True
        assert health["kb_chunks"] > 0
        await runner.stop()

        def last_status() -> str:
            return str([r.json for r in ops.replies if r.topic.endswith("/status")][-1]["state"])

        await until(lambda: last_status() == "offline")


async def test_broker_restart_reconnects_and_keeps_answering(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    async with GatewayRunner(make_settings(mosquitto)) as gw:
        adapter = gw.adapters["mqtt"]
        mosquitto.stop()
        for _ in range(100):
            if not adapter.connected:
                break
            await asyncio.sleep(0.05)
        assert not adapter.connected
        mosquitto.start()  # same port, same persistence directory
        for _ in range(200):
            if adapter.connected:
                break
            await asyncio.sleep(0.05)
        assert adapter.connected
        assert adapter.health().reconnects == 1
        async with terminal(mosquitto.port, "t1") as t:
            qid = await t.ask(OFF_TOPIC)
            assert (await t.wait_for(qid)).json["fallback"] is True
