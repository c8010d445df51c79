"""Issue 6, item 2: the gateway process killed with SIGKILL three times during 200 questions,
restarted by the test at once as systemd's `Restart=on-failure` would.

Questions keep arriving at a steady pace while the gateway dies and comes back: some wait in
the broker's persistent session, some were journaled and acknowledged but not answered, some
were answered but the broker's PUBACK for the answer never came. Every id is answered; a copy
sent twice (the outbox republishing after a restart) is byte-identical to the stored one; the
model ran at most once more than needed per kill (the run a kill interrupts is counted).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.daemon import Daemon
from tests.faults.bus import MqttClient
from tests.faults.conftest import mixed_texts, record, scaled, write_gateway_config
from tests.faults.ledger import account, runs_by_outcome

pytestmark = pytest.mark.timeout(900)
KILLS = 3


def test_gateway_sigkill_three_times_loses_nothing(
    mosquitto: Mosquitto, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    total = scaled(200, minimum=40)
    texts = mixed_texts(total, every=10)
    settings = make_settings(mosquitto)
    config = write_gateway_config(
        tmp_path,
        settings,
        f"[mqtt]\nport = {mosquitto.port}\nreconnect_max_s = 1\n"
        "[worker]\nmax_tokens = 8\nrequest_timeout_s = 120\n"
        "[kb]\ntop_k = 1\n[queue]\nmax_depth = 1000\n[health]\ninterval_s = 1\n",
    )
    log = tmp_path / "gw.log"
    keys = [(f"t{i % 4}", f"gk-{i}") for i in range(total)]
    started = time.monotonic()
    daemon = Daemon(config, log)
    kills: list[int] = []
    with (
        MqttClient(mosquitto.port, subscribe=("edge/plant1/terminal/+/answer/#",)) as ears,
        MqttClient(mosquitto.port) as mouth,
    ):

        def publish_steadily() -> None:
            for (terminal, qid), text in zip(keys, texts, strict=True):
                mouth.ask("plant1", terminal, qid, text)
                time.sleep(0.1)

        publisher = threading.Thread(target=publish_steadily, daemon=True)
        try:
            daemon.wait_event("gateway.ready")
            publisher.start()
            for n in range(KILLS):
                threshold = total * (n + 1) // (KILLS + 2)
                ears.wait(lambda t=threshold: len(ears.question_ids()) >= t, 300, "answers")
                kills.append(len(ears.question_ids()))
                daemon.signal(signal.SIGKILL)
                daemon.proc.wait(timeout=10)
                seen = len(daemon.events())
                daemon = Daemon(config, log)  # restarted at once, like Restart=on-failure
                daemon.wait_event("gateway.ready", after=seen)
            publisher.join(timeout=120)
            ears.wait_ids({q for _, q in keys}, 600)
            time.sleep(1.0)  # late duplicates, if any, arrive now
        finally:
            assert daemon.stop() == 0
    replies = ears.snapshot()
    figures = account("gateway kill -9 x3", keys, replies, [settings.journal_path])
    recovered = [e for e in daemon.events() if e.get("event") == "journal.recovered"]
    figures.extra.update(
        killed_after_answers=kills,
        recovered={
            "republished": sum(e["republished"] for e in recovered),
            "requeued": sum(e["requeued"] for e in recovered),
        },
        wall_s=round(time.monotonic() - started, 1),
    )
    record(figures)
    assert len(kills) == KILLS
    assert figures.missing == []
    assert figures.not_identical == []
    assert figures.kinds == {"answer": total}
    runs = runs_by_outcome(settings.journal_path)
    assert runs["fallback"] == {0}
    # Only a generation interrupted by a kill runs again: at most one id per kill.
    assert runs["model"] <= {1, 2}, runs
    reruns = sum(1 for n in figures.model_runs.elements() if n == 2)
    assert reruns <= KILLS
