"""Issue 6, item 3: item 2 on NATS JetStream, plus a nats-server `kill -9`.

200 questions are published into the question stream at a steady pace (each with a
`Nats-Msg-Id`, retried until the server's PubAck, so a publish that died with the server is
deduplicated, not doubled) while the gateway is killed three times and the server once (down
2 s, restarted on the same port and store). The terminal listens on its answer subject with a
plain subscription. Every id is answered: a question the server itself lost in its `kill -9`
after its PubAck is sent again with the same id, as the contract's terminal does, and
reported; one the gateway journaled or left in the stream fails the test, saying where it is.
Copies on the wire are byte-identical to the stored reply; the consumer ends with nothing
pending and nothing unacknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from tests.brokers import NatsServer
from tests.conftest import SettingsFactory
from tests.daemon import Daemon
from tests.faults.bus import Received
from tests.faults.conftest import mixed_texts, record, scaled, write_gateway_config
from tests.faults.ledger import account, answers_by_runs, stored_replies

pytestmark = pytest.mark.timeout(900)
STREAM = "EDGE_plant1_QUESTIONS"
KILLS = ("gateway", "server", "gateway", "gateway")
STALL_S = 60.0  # no new answer for this long: look for where the missing questions are


async def wait_for_every_answer(
    js: JetStreamContext,
    keys: list[tuple[str, str]],
    texts: list[str],
    answered_ids: Callable[[], set[str]],
    journal: Path,
    *,
    deadline_s: float,
) -> list[str]:
    """Wait until every question is answered; re-send (same id) only what the server lost.

    A question the server acknowledged (PubAck) can still be lost by nats-server's own
    `kill -9`: its file store writes behind the acknowledgement. The contract's terminal sends
    a question again with the same id when no answer came (docs/contract.md, "Retry with the
    same id or a new one?"), and so does this one, but only for an id that is in neither the
    gateway's journal nor the stream with the consumer idle: the server's loss, not ours. A
    question the gateway journaled, or one left in the stream, fails the test with where it is.
    """
    resent: list[str] = []
    progress_at, seen = time.monotonic(), len(answered_ids())
    async with asyncio.timeout(deadline_s):
        while (missing := [k for k in keys if k[1] not in answered_ids()]) != []:
            await asyncio.sleep(0.1)
            if len(answered_ids()) != seen:
                progress_at, seen = time.monotonic(), len(answered_ids())
            if time.monotonic() - progress_at < STALL_S:
                continue
            journaled = stored_replies(journal)
            info = await js.consumer_info(STREAM, "edge-gateway")
            in_stream = await stream_ids(js)
            where = {
                qid: ("journal" if (t, qid) in journaled else "stream" if qid in in_stream else "")
                for t, qid in missing
            }
            stuck = {qid: place for qid, place in where.items() if place}
            assert not stuck, (
                f"unanswered for {STALL_S:.0f} s: {stuck}; consumer pending "
                f"{info.num_pending}, unacknowledged {info.num_ack_pending}"
            )
            for terminal, qid in missing:
                body = json.dumps({"id": qid, "text": texts[keys.index((terminal, qid))]})
                await js.publish(f"edge.plant1.question.{terminal}", body.encode(), timeout=5)
                resent.append(qid)
            progress_at = time.monotonic()
    return resent


async def stream_ids(js: JetStreamContext) -> set[str]:
    """The question ids of every message still in the question stream."""
    state = (await js.stream_info(STREAM)).state
    ids = set()
    for seq in range(state.first_seq, state.last_seq + 1):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            stored = await js.get_msg(STREAM, seq)
            ids.add(json.loads(stored.data or b"{}").get("id"))
    return ids


async def test_jetstream_gateway_and_server_sigkill_lose_nothing(
    nats_server: NatsServer, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    total = scaled(200, minimum=40)
    texts = mixed_texts(total, every=10)
    settings = make_settings(None)
    config = write_gateway_config(
        tmp_path,
        settings,
        "[mqtt]\nenabled = false\n"
        f'[nats]\nenabled = true\nservers = ["{nats_server.url}"]\nmode = "jetstream"\n'
        "reconnect_wait_s = 0.1\n[nats.jetstream]\nack_wait_s = 2\n"
        "[worker]\nmax_tokens = 8\nrequest_timeout_s = 120\n"
        "[kb]\ntop_k = 1\n[health]\ninterval_s = 1\n",
    )
    log = tmp_path / "gw.log"
    keys = [(f"t{i % 4}", f"jk-{i}") for i in range(total)]
    received: list[Received] = []

    async def on_answer(msg: Msg) -> None:
        received.append(Received(msg.subject, msg.data, None, False, time.monotonic()))

    def answered_ids() -> set[str]:
        return {json.loads(r.payload).get("question_id") for r in received}

    def answered() -> int:
        return len(answered_ids())

    started = time.monotonic()
    daemon = Daemon(config, log)
    kills: list[tuple[str, int]] = []
    publish_retries = 0
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    try:
        await nc.subscribe("edge.plant1.answer.>", cb=on_answer)
        await nc.flush()
        js = nc.jetstream()

        async def publish_steadily() -> None:
            nonlocal publish_retries
            for (terminal, qid), text in zip(keys, texts, strict=True):
                body = json.dumps({"id": qid, "text": text}).encode()
                while True:  # a terminal retries until the server has it (PubAck)
                    try:
                        await js.publish(
                            f"edge.plant1.question.{terminal}",
                            body,
                            headers={"Nats-Msg-Id": f"{terminal}:{qid}"},
                            timeout=2,
                        )
                        break
                    except Exception:
                        publish_retries += 1
                        await asyncio.sleep(0.2)
                await asyncio.sleep(0.1)

        await asyncio.to_thread(daemon.wait_event, "gateway.ready")
        publisher = asyncio.create_task(publish_steadily())
        for n, what in enumerate(KILLS):
            threshold = total * (n + 1) // (len(KILLS) + 2)
            async with asyncio.timeout(300):
                while answered() < threshold:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            kills.append((what, answered()))
            if what == "server":
                nats_server.stop(kill=True)
                await asyncio.sleep(2.0)
                nats_server.start()
            else:
                daemon.signal(signal.SIGKILL)
                await asyncio.to_thread(daemon.proc.wait, 10)
                seen = len(daemon.events())
                daemon = Daemon(config, log)
                await asyncio.to_thread(daemon.wait_event, "gateway.ready", 120, seen)
        await asyncio.wait_for(publisher, 300)
        resent = await wait_for_every_answer(
            js, keys, texts, answered_ids, settings.journal_path, deadline_s=600
        )
        await asyncio.sleep(3.0)  # past AckWait: an unacknowledged question would come back
        info = await js.consumer_info(STREAM, "edge-gateway")
        left = (
            info.num_ack_pending,
            info.num_pending,
            (await js.stream_info(STREAM)).state.messages,
        )
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        code = await asyncio.to_thread(daemon.stop)
    assert code == 0
    figures = account("jetstream kills", keys, received, [settings.journal_path])
    dead = [e for e in daemon.events() if e.get("event") == "nats.dead_letter"]
    figures.extra.update(
        kills=kills,
        publish_retries=publish_retries,
        resent_lost_by_server=resent,
        dead_letters=len(dead),
        left_in_stream=left,
        wall_s=round(time.monotonic() - started, 1),
    )
    record(figures)
    assert figures.missing == []
    assert figures.not_identical == []
    assert figures.kinds == {"answer": total}
    # Nothing is waiting for an answer or an ack. The stream itself may keep a few messages
    # after the server's kill -9: nats-server 2.9.10 took their acks (the consumer's ack floor
    # is past them, so they are never delivered again) but had not yet removed them from the
    # work-queue store; they age out with max_age_s. Reported, not asserted.
    assert left[:2] == (0, 0)
    # Every in-domain question (one in ten) was answered by the model, every off-topic one by
    # a fallback without it; the model ran once per answer, twice only for a generation a
    # gateway kill interrupted: at most one id per gateway kill. Counts, so a run where the
    # model never ran (or ran for a fallback) fails here.
    gateway_kills = KILLS.count("gateway")
    in_domain = sum(1 for i in range(total) if i % 10 == 0)
    runs = answers_by_runs(settings.journal_path)
    assert runs["model", 1] + runs["model", 2] == in_domain, runs
    assert runs["fallback", 0] == total - in_domain, runs
    assert sum(runs.values()) == total, runs
    assert runs["model", 1] >= in_domain - gateway_kills, runs
    assert figures.model_runs[2] == runs["model", 2] <= gateway_kills
