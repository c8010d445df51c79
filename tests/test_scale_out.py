"""Issue 3: three gateway instances share 300 questions through the broker, each answered once.

Each instance has its own journal (as on separate boxes), so "never answered by two instances"
is the broker's job: an MQTT 5 shared subscription, a NATS queue group, or one JetStream
durable consumer on a work-queue stream hands each message to one instance. The test checks it
at the application level: every question id gets exactly one reply at the terminal, no id is in
two journals, and every instance answered some. Most questions are off-topic (fallback, no model
call) to keep 900 questions affordable on 2 cores; a handful are in-domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.config import Settings
from tests.brokers import Mosquitto, NatsServer
from tests.conftest import SettingsFactory
from tests.harness import GatewayRunner, terminal
from tests.nats_terminal import nats_terminal

pytestmark = pytest.mark.slow

N_QUESTIONS = 300
IN_DOMAIN = {
    7: "What does alarm E203 on press P2 mean?",
    150: "Which filter element do I need for the P2 pressure filter?",
}
INSTANCES = 3


def question_text(i: int) -> str:
    return IN_DOMAIN.get(i, f"What is the best recipe for chocolate cake number {i}?")


def journal_ids(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return {row[0] for row in db.execute("SELECT question_id FROM questions")}


def model_runs(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COALESCE(SUM(model_runs), 0) FROM questions").fetchone()[0])


@contextlib.asynccontextmanager
async def instances(
    make_settings: SettingsFactory,
    demo_kb_file: Path,
    tmp_path: Path,
    broker: Mosquitto | None,
    *overrides: str,
) -> AsyncIterator[list[Settings]]:
    """Three gateways, each with its own data dir (journal + KB copy) and instance name."""
    settings = []
    for i in range(1, INSTANCES + 1):
        data = tmp_path / f"gw{i}"
        data.mkdir()
        shutil.copy(demo_kb_file, data / "kb.sqlite3")
        settings.append(
            make_settings(
                broker,
                *overrides,
                f"instance=gw{i}",
                f"data_dir={data}",
                "worker.max_tokens=12",
                "worker.n_threads=1",
                "queue.max_depth=400",
                "log.level=warning",
            )
        )
    runners = [GatewayRunner(s) for s in settings]
    try:
        for runner in runners:
            await runner.start()
        yield settings
    finally:
        for runner in runners:
            await runner.stop()


def check_exactly_once(received: Counter[str], settings: list[Settings]) -> dict[str, int]:
    expected = {f"s-{i}" for i in range(N_QUESTIONS)}
    assert set(received) == expected, sorted(expected - set(received))[:5]
    assert max(received.values()) == 1, received.most_common(3)
    per_instance = {s.instance: journal_ids(s.journal_path) for s in settings}
    seen: Counter[str] = Counter()
    for ids in per_instance.values():
        seen.update(ids)
    assert set(seen) == expected
    assert max(seen.values()) == 1, "a question reached two instances"
    counts = {name: len(ids) for name, ids in per_instance.items()}
    assert all(n > 0 for n in counts.values()), counts
    assert sum(model_runs(s.journal_path) for s in settings) == len(IN_DOMAIN)
    print(f"answers per instance: {counts}")
    return counts


async def test_mqtt_shared_subscription_splits_300_questions(
    mosquitto: Mosquitto, make_settings: SettingsFactory, demo_kb_file: Path, tmp_path: Path
) -> None:
    async with (
        instances(make_settings, demo_kb_file, tmp_path, mosquitto, "mqtt.shared_group=gws") as s,
        terminal(mosquitto.port, "t1") as t,
    ):
        for i in range(N_QUESTIONS):
            await t.ask(question_text(i), qid=f"s-{i}")
        await t.wait_count(N_QUESTIONS, timeout_s=240)
        await asyncio.sleep(1.0)  # a second answer to any question would arrive by now
        received = Counter(r.json["question_id"] for r in t.replies)
        assert all(r.json["kind"] == "answer" for r in t.replies)
        check_exactly_once(received, s)


@pytest.mark.parametrize("mode", ["core", "jetstream"])
async def test_nats_splits_300_questions(
    mode: str,
    nats_server: NatsServer,
    make_settings: SettingsFactory,
    demo_kb_file: Path,
    tmp_path: Path,
) -> None:
    overrides = ["nats.enabled=true", f"nats.servers={nats_server.url}", f"nats.mode={mode}"]
    async with (
        instances(make_settings, demo_kb_file, tmp_path, None, *overrides) as s,
        nats_terminal(nats_server.url, "t1") as t,
    ):
        js = t.nc.jetstream()
        for i in range(N_QUESTIONS):
            payload = json.dumps({"id": f"s-{i}", "text": question_text(i)}).encode()
            if mode == "core":
                # Reply below the terminal's own answer subject, so every copy is counted.
                await t.nc.publish(t.question_subject, payload, reply=t.answer_subject + ".rr")
            else:
                await js.publish(t.question_subject, payload, headers={"Nats-Msg-Id": f"t1:s-{i}"})
        await t.wait_ids({f"s-{i}" for i in range(N_QUESTIONS)}, timeout_s=240)
        await asyncio.sleep(1.0)
        received = Counter(r["question_id"] for _, r in t.replies)
        assert all(r["kind"] == "answer" for _, r in t.replies)
        check_exactly_once(received, s)
