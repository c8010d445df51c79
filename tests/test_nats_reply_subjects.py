"""NATS reply subjects are safe by default: a terminal's requests are answered in its own
inboxes (`_INBOX.<terminal id>.`), and a reply subject in another terminal's inbox, or a client's
default `_INBOX.`, is refused with `forbidden_response_topic` on the asker's own answer subject.
Real nats-server, the gateway's default `nats.reply_prefixes`."""

from __future__ import annotations

import asyncio
import json

import pytest
from nats.aio.msg import Msg

from tests.brokers import NatsServer
from tests.conftest import SettingsFactory
from tests.harness import GatewayRunner
from tests.nats_terminal import nats_terminal

pytestmark = pytest.mark.slow

QUESTION = "How do I replace the return filter on P2?"


def question(qid: str) -> bytes:
    return json.dumps({"id": qid, "text": QUESTION}).encode()


async def test_a_terminal_cannot_have_its_answer_sent_to_another_terminals_inbox(
    nats_server: NatsServer, make_settings: SettingsFactory
) -> None:
    settings = make_settings(
        None,
        "nats.enabled=true",
        f'nats.servers=["{nats_server.url}"]',
        "answer.mode=extractive",
    )
    assert settings.nats.reply_prefixes == ["_INBOX.{terminal_id}."]
    async with (
        GatewayRunner(settings),
        nats_terminal(nats_server.url, "t1") as t1,
        nats_terminal(nats_server.url, "t2") as t2,
    ):
        seen_in_t2_inbox: list[Msg] = []
        arrived = asyncio.Event()

        async def spy(msg: Msg) -> None:
            seen_in_t2_inbox.append(msg)
            arrived.set()

        await t2.nc.subscribe("_INBOX.t2.>", cb=spy)
        await t2.nc.flush()

        # t1 names t2's inbox; then a reply subject in a client's default inbox space.
        await t1.nc.publish(t1.question_subject, question("steal"), reply="_INBOX.t2.stolen")
        await t1.nc.publish(t1.question_subject, question("stock"), reply="_INBOX.Xy12ab.1")
        await t1.wait_ids({"steal", "stock"})
        refusals = {r["question_id"]: r for subject, r in t1.replies}
        assert {subject for subject, _ in t1.replies} == {t1.answer_subject}
        for qid in ("steal", "stock"):
            assert refusals[qid]["kind"] == "error"
            assert refusals[qid]["code"] == "forbidden_response_topic"

        # t1's own request/reply, with its inbox prefix, is answered in its inbox.
        own = await t1.request("own", QUESTION)
        assert own["kind"] == "answer"
        assert own["question_id"] == "own"

        # t2's own request proves t2's inbox receives what is addressed to it: the spy saw that
        # answer and nothing before it, so the refused one would have arrived first.
        mine = await t2.request("t2-own", QUESTION)
        assert mine["kind"] == "answer"
        async with asyncio.timeout(10):
            await arrived.wait()
        assert [json.loads(m.data)["question_id"] for m in seen_in_t2_inbox] == ["t2-own"]
