"""Our broker drop-ins on a plant's stock mosquitto: they start, and they keep queued messages.

`sudo cp configs/mosquitto.conf /etc/mosquitto/conf.d/edge-gateway.conf` used to stop the
plant's broker from starting ("Duplicate persistence_location value in configuration"): Debian's
stock /etc/mosquitto/mosquitto.conf already sets it. Here the real mosquitto binary runs that
stock file (tests/debian/mosquitto.conf, only its paths moved into the test's directory) with
our drop-in in its included conf.d, as on the box.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.brokers import (
    DEBIAN_STOCK_CONF,
    DROPIN_NAME,
    REPO,
    SHIPPED_MOSQUITTO_CONF,
    STOCK_PATHS,
    Mosquitto,
    write_plant_config,
)
from tests.faults.bus import MqttClient

pytestmark = pytest.mark.timeout(120)
DROPINS = (SHIPPED_MOSQUITTO_CONF, REPO / "configs" / "mosquitto-secure.conf")
TOPIC = "edge/plant1/terminal/t1/answer"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def options(text: str) -> set[str]:
    """The option names a mosquitto configuration sets (first word of each setting line)."""
    return {
        line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")
    }


@pytest.mark.parametrize("dropin", DROPINS, ids=lambda p: p.name)
def test_the_dropin_sets_only_what_the_stock_file_lacks(dropin: Path) -> None:
    stock = options(DEBIAN_STOCK_CONF.read_text())
    assert {"persistence", "persistence_location", "pid_file", "include_dir"} <= stock
    assert options(dropin.read_text()) & stock == set()


def test_a_dropin_repeating_the_stock_file_stops_the_broker(tmp_path: Path) -> None:
    """The reported failure, reproduced: what the test harness below would catch."""
    dropin = "persistence_location /var/lib/mosquitto/\n" + SHIPPED_MOSQUITTO_CONF.read_text()
    conf = write_plant_config(tmp_path, dropin)
    result = subprocess.run(
        [MOSQUITTO, "-c", str(conf)], capture_output=True, text=True, timeout=20, check=False
    )
    assert result.returncode != 0
    assert "Error: Duplicate persistence_location value in configuration." in result.stderr
    assert f"Error found at {tmp_path}/conf.d/{DROPIN_NAME}:1." in result.stderr


def test_stock_config_plus_dropin_keeps_a_queued_qos1_message_across_kill_9(
    tmp_path: Path,
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    # What runs is the stock file with only its paths changed, and our drop-in with only its
    # listener's port changed.
    stock_lines = DEBIAN_STOCK_CONF.read_text().splitlines()
    ran_lines = broker.conf.read_text().splitlines()
    assert len(ran_lines) >= len(stock_lines)
    changed = [new for old, new in zip(stock_lines, ran_lines, strict=False) if old != new]
    assert sorted(re.sub(r" /.*$", "", line) for line in changed) == sorted(STOCK_PATHS)
    assert all(str(tmp_path) in line for line in changed)
    assert set(ran_lines[len(stock_lines) :]) <= {"", "log_type all", "user root"}
    dropin = (broker.workdir / "conf.d" / DROPIN_NAME).read_text().splitlines()
    shipped = SHIPPED_MOSQUITTO_CONF.read_text().splitlines()
    assert [a for a, b in zip(dropin, shipped, strict=True) if a != b] == [
        f"listener {broker.port} 127.0.0.1"
    ]

    broker.start()
    try:
        # A persistent-session subscriber (an offline gateway, a terminal in a locker)...
        subscriber = MqttClient(broker.port, client_id="dropin-sub", subscribe=(TOPIC,))
        with subscriber, MqttClient(broker.port, persistent=False) as publisher:
            # ... whose subscription is in place: it receives a probe.
            publisher.publish(TOPIC, b"probe").wait_for_publish(5)
            subscriber.wait(lambda: len(subscriber.received) == 1, 10, "the probe")
        # It is offline now; a QoS 1 message for it is acknowledged by the broker.
        with MqttClient(broker.port, persistent=False) as publisher:
            sent = publisher.publish(TOPIC, b"queued-while-offline", qos=1)
            sent.wait_for_publish(5)
            assert sent.is_published()
        # The drop-in's autosave puts it on disk at once (the stock default: every 30 min).
        store = broker.workdir / "mosquitto.db"
        deadline = time.monotonic() + 10
        while not (store.exists() and b"queued-while-offline" in store.read_bytes()):
            assert time.monotonic() < deadline, "the queued message never reached mosquitto.db"
            time.sleep(0.05)
        broker.stop(kill=True)  # SIGKILL: no saving on the way out
        broker.start()
        # The subscriber comes back with its session: no new subscription, the message waits.
        with MqttClient(broker.port, client_id="dropin-sub") as back:
            back.wait(lambda: len(back.received) >= 1, 15, "the queued message")
            # Anything else queued (a duplicate) would arrive before a message sent now.
            with MqttClient(broker.port, persistent=False) as publisher:
                publisher.publish(TOPIC, b"after-restart").wait_for_publish(5)
            back.wait(lambda: back.received[-1].payload == b"after-restart", 10, "the marker")
            got = back.snapshot()
    finally:
        broker.stop()
    assert [(r.topic, r.payload) for r in got] == [
        (TOPIC, b"queued-while-offline"),
        (TOPIC, b"after-restart"),
    ]
    log = broker.log.read_text(errors="replace")
    assert log.count("Config loaded from") == 2
    assert "Error" not in log
