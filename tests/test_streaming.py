"""Partial answers over MQTT (plain and MQTT 5 request/response) and NATS core request/reply:
the best quote first, then the answer text while the model writes; the final answer stays
complete and is sent as before. Generative mode, so that model text is streamed."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.brokers import Mosquitto, NatsServer
from tests.conftest import SettingsFactory
from tests.harness import GatewayRunner, Reply, Terminal, terminal
from tests.nats_terminal import nats_terminal

pytestmark = pytest.mark.slow

E203 = "What does alarm E203 on press P2 mean?"
FILTER = "Which filter element do I need for the P2 pressure filter?"
PUMP = "How do I check the pump delivery on press P2?"
OFF_TOPIC = "What is the best recipe for chocolate cake?"


def stream_payload(qid: str, text: str) -> bytes:
    return json.dumps({"id": qid, "text": text, "stream": True}).encode()


def assert_partials_spell_the_answer(
    pieces: list[dict[str, object]], final: dict[str, object]
) -> None:
    """The quote first (one of the answer's sources, with its quote), then text pieces that
    spell the final text."""
    assert len(pieces) >= 2, pieces
    assert [p["seq"] for p in pieces] == list(range(len(pieces)))
    assert all(p["kind"] == "partial" for p in pieces)
    quote, *text = pieces
    assert quote["stage"] == "quote"
    assert quote["source"] in final["sources"]
    assert quote["text"] == quote["source"]["quote"]  # type: ignore[index]
    assert [p["stage"] for p in text] == ["text"] * len(text)
    assert "".join(str(p["text"]) for p in text).strip() == final["text"]


def partials(t: Terminal, topic: str, qid: str) -> list[Reply]:
    return [r for r in t.replies if r.topic == topic and r.json["question_id"] == qid]


async def test_mqtt_partials_arrive_in_order_and_the_final_answer_is_complete(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    settings = make_settings(
        mosquitto,
        "answer_cache.enabled=false",
        "streaming.terminals=t3",
        "worker.max_tokens=32",
        "answer.mode=generative",
    )
    async with (
        GatewayRunner(settings) as gw,
        terminal(mosquitto.port, "t1") as t1,
        terminal(mosquitto.port, "t2") as t2,
        terminal(mosquitto.port, "t3") as t3,
    ):
        # Asked for by the question.
        await t1.ask(qid="s-1", payload=stream_payload("s-1", E203))
        final = (await t1.wait_for("s-1", topic=t1.answer_topic)).json
        assert final["kind"] == "answer"
        assert final["fallback"] is False
        pieces = partials(t1, t1.answer_topic + "/partial", "s-1")
        assert_partials_spell_the_answer([p.json for p in pieces], final)
        assert all(p.correlation is None for p in pieces)

        # MQTT 5 request/response: partials below the response topic, with the correlation data;
        # the response topic itself gets only the answer (mosquitto_rr takes the first message).
        rr = t1.answer_topic + "/rr-7"
        await t1.ask(
            qid="s-2", payload=stream_payload("s-2", FILTER), response_topic=rr, correlation=b"c7"
        )
        final = (await t1.wait_for("s-2", topic=rr)).json
        assert final["kind"] == "answer"
        pieces = partials(t1, rr + "/partial", "s-2")
        assert_partials_spell_the_answer([p.json for p in pieces], final)
        assert {p.correlation for p in pieces} == {b"c7"}
        assert [r.json["kind"] for r in t1.replies if r.topic == rr] == ["answer"]

        # Not asked for: nothing but the answer.
        qid = await t2.ask(PUMP)
        assert (await t2.wait_for(qid)).json["kind"] == "answer"

        # Streaming configured for the terminal: partials without the flag.
        qid3 = await t3.ask(E203)
        final = (await t3.wait_for(qid3, topic=t3.answer_topic)).json
        pieces = partials(t3, t3.answer_topic + "/partial", qid3)
        assert_partials_spell_the_answer([p.json for p in pieces], final)

        # t2 (not streaming) got its answer and no partial: a later question of t2's is
        # answered, and the two answers are all t2 ever received (partials of the first would
        # have come before its answer, on the same subscription).
        later = await t2.ask(OFF_TOPIC)
        assert (await t2.wait_for(later)).json["fallback"] is True
        assert [(r.topic, r.json["question_id"]) for r in t2.replies] == [
            (t2.answer_topic, qid),
            (t2.answer_topic, later),
        ]
        assert gw.metrics.model_runs == 4  # the off-topic one is a fallback, no model run


async def test_nats_partials_go_to_the_answer_subject_and_the_answer_to_the_inbox(
    nats_server: NatsServer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(
        None,
        "nats.enabled=true",
        f'nats.servers=["{nats_server.url}"]',
        "answer_cache.enabled=false",
        "worker.max_tokens=32",
        "answer.mode=generative",
    )
    async with GatewayRunner(settings), nats_terminal(nats_server.url, "t1") as t:
        msg = await t.nc.request(t.question_subject, stream_payload("ns-1", E203), timeout=120)
        final = json.loads(msg.data)
        assert final["kind"] == "answer"
        pieces = [r for s, r in t.replies if s == t.answer_subject + ".partial"]
        assert_partials_spell_the_answer(pieces, final)
        assert all(r["question_id"] == "ns-1" for r in pieces)

        # Not asked for: the inbox gets the answer, the answer subject nothing at all.
        t.replies.clear()
        reply = await t.request("ns-2", FILTER)
        assert reply["kind"] == "answer"
        # Proven by a later streamed question without a reply subject: its partials and its
        # answer arrive on the answer subject and below it (the subscriptions a partial or a
        # misrouted answer of ns-2 would have used, and earlier), and they are all that came.
        await t.nc.publish(t.question_subject, stream_payload("ns-3", E203))
        async with asyncio.timeout(120), t._arrived:
            await t._arrived.wait_for(
                lambda: (
                    {s for s, r in t.replies if r["question_id"] == "ns-3"}
                    == {t.answer_subject, t.answer_subject + ".partial"}
                )
            )
        assert {r["question_id"] for _, r in t.replies} == {"ns-3"}
