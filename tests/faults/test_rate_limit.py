"""Issue 6, item 10: one terminal flooding cannot make another terminal wait behind its backlog,
because of the per-terminal rate limit (`limits.questions_per_minute`).

Terminal `quiet` asks in-domain questions one after the other at a technician's pace (each
waits for its answer), first alone, then while terminal `flood` publishes the same kind of
question as fast as it can. What is asserted is order and counts, not time: the one answering
task serves questions first in, first out, so without the limit every flood question sent
before a quiet one would be answered before it. With it, the flood answers that arrive between
a quiet question and its answer are bounded by what the limiter could have admitted (the burst
plus the refill up to that answer, less the flood answers already out), a handful, while the
flood had sent hundreds. Wall-clock latencies (p95 solo and under the flood) are reported in
the figures only: on a shared 2-core machine they measure the CPU as much as the queue.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.faults.bus import MqttClient, Received
from tests.faults.conftest import in_domain, record, scaled
from tests.harness import GatewayRunner

pytestmark = pytest.mark.timeout(600)
PER_MINUTE = 12
BURST = 2
PACE_S = 5.5
"""The quiet terminal asks at most once every PACE_S (under 12 a minute): inside the limit."""
BACKLOG = 50
"""Flood questions sent before each quiet question under the flood, at least: far more than
the limiter lets through, so answering the quiet one early is not a coincidence."""


@dataclass(frozen=True, slots=True)
class Asked:
    qid: str
    asked_at: float
    answer: Received
    flood_sent: int
    """Flood questions published before this one was."""


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


def ask_in_turn(
    ears: MqttClient, mouth: MqttClient, prefix: str, texts: list[str], flood_sent: list[int]
) -> list[Asked]:
    """Ask one at a time, one every PACE_S at most; each reply must be an answer."""
    asked = []
    for i, text in enumerate(texts):
        qid = f"{prefix}-{i}"
        sent_before = flood_sent[0]
        started = time.monotonic()
        mouth.ask("plant1", "quiet", qid, text)
        ears.wait_ids({qid}, 180)
        reply = ears.question_ids()[qid][0]
        body = reply.json()
        assert body is not None
        assert body["kind"] == "answer", body
        asked.append(Asked(qid, started, reply, sent_before))
        time.sleep(max(0.0, PACE_S - (time.monotonic() - started)))
    return asked


async def test_flooding_terminal_cannot_put_its_backlog_ahead_of_another_terminal(
    mosquitto: Mosquitto, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    n = scaled(4, minimum=3)
    texts = in_domain(n)
    settings = make_settings(
        mosquitto,
        "worker.max_tokens=8",
        "kb.top_k=1",
        "worker.n_threads=1",
        f"limits.questions_per_minute={PER_MINUTE}",
        f"limits.question_burst={BURST}",
    )
    async with GatewayRunner(settings) as gw:
        with (
            MqttClient(mosquitto.port, subscribe=("edge/plant1/terminal/+/answer/#",)) as ears,
            MqttClient(mosquitto.port) as mouth,
            MqttClient(mosquitto.port) as flooder,
        ):
            flood_sent = [0]
            # Warm-up (model pages, KV cache), then the baseline: the quiet terminal alone.
            await asyncio.to_thread(ask_in_turn, ears, mouth, "warm", texts[:1], flood_sent)
            solo = await asyncio.to_thread(ask_in_turn, ears, mouth, "solo", texts, flood_sent)
            stop = threading.Event()

            def flood() -> None:
                while not stop.is_set():
                    i = flood_sent[0]
                    flooder.ask("plant1", "flood", f"f-{i}", texts[i % n])
                    flood_sent[0] = i + 1
                    time.sleep(0.01)

            def flood_replies() -> list[tuple[Received, dict[str, object]]]:
                return [
                    (r, body)
                    for r in ears.snapshot()
                    if "/terminal/flood/" in r.topic and (body := r.json()) is not None
                ]

            flooding = threading.Thread(target=flood, daemon=True)
            flood_started = time.monotonic()
            flooding.start()
            # The flood's burst is its allowance: let it be answered, and the backlog build.
            await asyncio.to_thread(
                ears.wait,
                lambda: (
                    sum(b.get("kind") == "answer" for _, b in flood_replies()) >= BURST
                    and flood_sent[0] >= BACKLOG
                ),
                300,
                "the flood's burst answered and its backlog sent",
            )
            loaded = await asyncio.to_thread(ask_in_turn, ears, mouth, "loaded", texts, flood_sent)
            stop.set()
            flooding.join()
            flood_s = time.monotonic() - flood_started
            # Every flood question gets exactly one reply: an answer or `rate_limited`.
            await asyncio.to_thread(
                ears.wait, lambda: len(flood_replies()) >= flood_sent[0], 300, "flood replies"
            )
            limited = gw.metrics.rate_limited
            other_answers = [
                r
                for r in ears.snapshot()
                if "/terminal/quiet/" not in r.topic and (r.json() or {}).get("kind") == "answer"
            ]
    flood_answers = [r.at for r, body in flood_replies() if body.get("kind") == "answer"]
    kinds: dict[str, int] = {}
    for _, body in flood_replies():
        key = body.get("code") or body.get("kind")
        kinds[str(key)] = kinds.get(str(key), 0) + 1

    def ahead(q: Asked) -> int:
        """Answers to anyone else that arrived between this question and its answer."""
        return sum(q.asked_at < r.at < q.answer.at for r in other_answers)

    def allowance(q: Asked) -> int:
        """What the limiter can have let the flood put ahead of `q`: every flood question it
        admitted by the time `q` was answered (burst + refill since the flood's first message,
        which came after `flood_started`), less those already answered when `q` was asked."""
        admitted = BURST + math.floor(PER_MINUTE * (q.answer.at - flood_started) / 60)
        return admitted - sum(at < q.asked_at for at in flood_answers)

    solo_s = [q.answer.at - q.asked_at for q in solo]
    loaded_s = [q.answer.at - q.asked_at for q in loaded]
    admitted = kinds.get("answer", 0)
    bound = BURST + math.floor(PER_MINUTE * flood_s / 60) + 1
    record(
        f"FIGURES rate limit ({PER_MINUTE}/min, burst {BURST}): quiet terminal solo: answers "
        f"ahead {[ahead(q) for q in solo]}, p95 {p95(solo_s):.2f} s (median "
        f"{statistics.median(solo_s):.2f}); during a flood: flood questions sent before each "
        f"{[q.flood_sent for q in loaded]}, flood answers ahead {[ahead(q) for q in loaded]} "
        f"(limiter allowance {[allowance(q) for q in loaded]}), p95 {p95(loaded_s):.2f} s "
        f"(median {statistics.median(loaded_s):.2f}) = {p95(loaded_s) / p95(solo_s):.2f}x "
        f"(reported, not asserted); flood sent {flood_sent[0]} in {flood_s:.0f} s, replies "
        f"{kinds}, rate_limited counter {limited}; flood answers admitted {admitted} (limiter "
        f"bound {bound})"
    )
    # The flood: one reply per question, answers only within the limiter's allowance.
    assert limited > 0
    assert kinds.get("rate_limited", 0) == limited
    assert sum(kinds.values()) == flood_sent[0]
    assert set(kinds) == {"answer", "rate_limited"}
    assert BURST <= admitted <= bound
    # Baseline, same run: alone, the quiet terminal's question is the only one being answered.
    assert [ahead(q) for q in solo] == [0] * n
    # Under the flood: each quiet question was asked behind a backlog of hundreds of flood
    # questions, yet answered after at most the few the limiter admitted (FIFO without the
    # limit would have answered the whole backlog first, or refused the quiet one `busy`).
    for q in loaded:
        backlog = q.flood_sent - sum(at < q.asked_at for at in flood_answers)
        assert backlog >= BACKLOG, (q.qid, backlog)
        assert allowance(q) < backlog // 4, (q.qid, allowance(q), backlog)
        assert ahead(q) <= allowance(q), (q.qid, ahead(q), allowance(q))
