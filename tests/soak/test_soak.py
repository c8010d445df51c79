"""Issue 6, item 12: a bounded soak, `make soak` (about 10 minutes; not in CI).

The gateway daemon answers a steady stream of questions (one in ten in-domain, so the model
runs throughout) with a short journal retention. Sampled every 5 s after a warm-up minute:
gateway and worker RSS, open file descriptors, journal rows and file size. Pass: RSS growth
< 10 % from the end of the warm-up, no file-descriptor growth, and the journal never holds
more than its retention allows (retention + one purge interval of questions).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.daemon import Daemon
from tests.faults.bus import MqttClient
from tests.faults.conftest import mixed_texts, record, write_gateway_config

DURATION_S = float(os.environ.get("EDGE_SOAK_S", "600"))
RATE_PER_S = 4.0
RETENTION_S = 60.0
WARMUP_S = 60.0
pytestmark = pytest.mark.timeout(int(DURATION_S) + 600)


def journal_rows(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM questions").fetchone()[0])
    finally:
        db.close()


def test_soak_memory_fds_and_journal_stay_bounded(
    mosquitto: Mosquitto, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(mosquitto)
    config = write_gateway_config(
        tmp_path,
        settings,
        f"[mqtt]\nport = {mosquitto.port}\n[worker]\nmax_tokens = 8\n[kb]\ntop_k = 1\n"
        f"[journal]\nretention_h = {RETENTION_S / 3600}\n[queue]\nmax_depth = 256\n",
    )
    daemon = Daemon(config, tmp_path / "gw.log")
    samples: list[tuple[float, int, int, int, int, int]] = []
    sent = 0
    try:
        daemon.wait_event("gateway.ready")
        gateway = psutil.Process(daemon.proc.pid)
        texts = mixed_texts(int(DURATION_S * RATE_PER_S) + 10, every=10)
        with (
            MqttClient(mosquitto.port, subscribe=("edge/plant1/terminal/+/answer/#",)) as ears,
            MqttClient(mosquitto.port) as mouth,
        ):
            stop = threading.Event()

            def publish() -> None:
                nonlocal sent
                started = time.monotonic()
                while not stop.is_set():
                    mouth.ask("plant1", f"t{sent % 8}", f"soak-{sent}", texts[sent])
                    sent += 1
                    time.sleep(max(0.0, started + sent / RATE_PER_S - time.monotonic()))

            publisher = threading.Thread(target=publish, daemon=True)
            started = time.monotonic()
            publisher.start()
            while time.monotonic() - started < DURATION_S:
                time.sleep(5.0)
                worker = [c for c in gateway.children(recursive=True) if c.is_running()]
                samples.append(
                    (
                        time.monotonic() - started,
                        gateway.memory_info().rss,
                        sum(w.memory_info().rss for w in worker),
                        gateway.num_fds(),
                        journal_rows(settings.journal_path),
                        settings.journal_path.stat().st_size,
                    )
                )
                assert daemon.proc.poll() is None
            stop.set()
            publisher.join()
            ears.wait_ids({f"soak-{i}" for i in range(sent)}, 300)
    finally:
        assert daemon.stop() == 0
    steady = [s for s in samples if s[0] >= WARMUP_S]
    first, last = steady[0], steady[-1]
    rss_growth = (last[1] - first[1]) / first[1]
    worker_growth = (last[2] - first[2]) / first[2]
    max_rows = max(s[4] for s in steady)
    bound_rows = int(RATE_PER_S * (RETENTION_S + RETENTION_S / 4) * 1.2) + 50
    record(
        f"FIGURES soak ({DURATION_S:.0f} s at {RATE_PER_S:g}/s, {sent} questions, all answered): "
        f"gateway RSS {first[1] / 2**20:.1f} -> {last[1] / 2**20:.1f} MB ({rss_growth:+.1%}), "
        f"worker RSS {first[2] / 2**20:.0f} -> {last[2] / 2**20:.0f} MB ({worker_growth:+.1%}), "
        f"fds {first[3]} -> {last[3]} (max {max(s[3] for s in steady)}), journal rows max "
        f"{max_rows} (bound {bound_rows}), file {first[5] / 2**10:.0f} -> {last[5] / 2**10:.0f} KiB"
    )
    assert rss_growth < 0.10
    assert worker_growth < 0.10
    assert last[3] <= first[3]
    assert max_rows <= bound_rows
