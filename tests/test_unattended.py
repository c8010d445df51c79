"""The daemon as systemd runs it: notify socket + watchdog, SIGTERM mid-answer, SIGHUP reload."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Settings
from gateway.ops.operations import TEST_STALL_S
from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.daemon import Daemon
from tests.harness import terminal

pytestmark = pytest.mark.slow
OFF_TOPIC = "Who won the football world cup in 1998?"


def write_config(
    path: Path, settings: Settings, port: int, *, fallback: str, extra: str = ""
) -> Path:
    path.write_text(
        f'data_dir = "{settings.data_dir}"\n'
        f'cache_dir = "{settings.cache_dir}"\n'
        f"[mqtt]\nport = {port}\n"
        "[worker]\nmax_tokens = 48\nrequest_timeout_s = 60\n"
        "[health]\ninterval_s = 0.5\n"
        f"[kb]\nfallback_text = {json.dumps(fallback)}\n{extra}"
    )
    return path


class NotifyListener:
    """A NOTIFY_SOCKET (abstract namespace) recording every line with its arrival time."""

    def __init__(self) -> None:
        self.address = f"@edge-gw-test-{secrets.token_hex(4)}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(b"\0" + self.address[1:].encode())
        self._sock.settimeout(0.1)
        self.lines: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            now = time.monotonic()
            self.lines += [(now, line) for line in data.decode().split("\n")]

    def first(self, line: str, timeout_s: float = 90.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, got in list(self.lines):
                if got == line:
                    return at
            time.sleep(0.02)
        raise TimeoutError(f"no {line} in {timeout_s} s: {self.lines[-10:]}")

    def pings(self, start: float, end: float) -> list[float]:
        return [at for at, line in list(self.lines) if line == "WATCHDOG=1" and start <= at <= end]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    sock = NotifyListener()
    yield sock
    sock.close()


def test_ready_after_model_and_broker_then_watchdog_cadence_and_stall(
    make_settings: SettingsFactory, tmp_path: Path, listener: NotifyListener
) -> None:
    broker = Mosquitto(tmp_path / "late-broker")  # not started yet
    settings = make_settings(broker)
    config = write_config(tmp_path / "gw.toml", settings, broker.port, fallback="none here")
    daemon = Daemon(
        config,
        tmp_path / "gw.log",
        env={"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "1000000"},
        watchdog_pid=True,
    )
    try:
        daemon.wait_event("worker.started")
        listener.first("STATUS=connecting to mqtt")
        time.sleep(1.0)  # model loaded, broker down: starting, pinging, not ready
        assert "READY=1" not in [line for _, line in listener.lines]
        assert any(line.startswith("EXTEND_TIMEOUT_USEC=") for _, line in listener.lines)
        broker_started = time.monotonic()
        broker.start()
        ready_at = listener.first("READY=1")
        assert ready_at > broker_started
        assert daemon.wait_event("gateway.ready", timeout_s=5)
        # Cadence: WATCHDOG_USEC=1 s -> a ping every 0.5 s.
        time.sleep(3.0)
        pings = listener.pings(ready_at, ready_at + 3.0)
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert 4 <= len(pings) <= 8, pings
        assert 0.4 <= statistics.median(gaps) <= 0.65, gaps
        print(f"watchdog: {len(pings)} pings, median gap {statistics.median(gaps):.3f} s")
        # A blocked loop stops the pings (and they come back once it runs again).
        stall_at = time.monotonic()
        daemon.signal(signal.SIGUSR2)
        daemon.wait_event("test.loop_stalled", timeout_s=5)
        deadline = time.monotonic() + TEST_STALL_S + 10
        longest = 0.0
        while time.monotonic() < deadline:
            after = listener.pings(stall_at - 1.0, time.monotonic())
            gaps = [b - a for a, b in itertools.pairwise(after)]
            longest = max(gaps, default=0.0)
            if longest >= TEST_STALL_S - 0.5:
                break
            time.sleep(0.1)
        assert longest >= TEST_STALL_S - 0.5, (stall_at, after)
        print(f"watchdog: longest gap around the stall {longest:.3f} s")
        statuses = [line for _, line in listener.lines if line.startswith("STATUS=ready")]
        assert statuses, listener.lines[-20:]
        code = daemon.stop()
        assert code == 0
        assert "STOPPING=1" in [line for _, line in listener.lines]
    finally:
        daemon.stop()
        broker.stop()


def test_sigterm_mid_answer_exits_0_offline_and_answers_after_restart(
    mosquitto: Mosquitto, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(mosquitto)
    config = write_config(tmp_path / "gw.toml", settings, mosquitto.port, fallback="none here")
    # drain 0 s: whatever is being answered at SIGTERM is left for the restart.
    log = tmp_path / "gw.log"
    daemon = Daemon(config, log, overrides=("shutdown.drain_timeout_s=0",))
    answers = tmp_path / "answers.txt"
    sub = subprocess.Popen(
        ["mosquitto_sub", "-V", "5", "-p", str(mosquitto.port), "-q", "1", "-c", "-i", "term-t9",
         "-x", "600", "-t", "edge/plant1/terminal/t9/answer", "-F", "%p"],
        stdout=answers.open("wb"),
    )  # fmt: skip
    try:
        daemon.wait_event("gateway.ready")
        question = json.dumps(
            {"id": "long-1", "text": "How do I replace the pressure filter on press P2?"}
        )
        subprocess.run(
            ["mosquitto_pub", "-V", "5", "-p", str(mosquitto.port), "-q", "1",
             "-t", "edge/plant1/terminal/t9/question", "-m", question],
            check=True,
        )  # fmt: skip
        daemon.wait_event("question.received")
        daemon.signal(signal.SIGTERM)
        assert daemon.stop() == 0
        events = [e["event"] for e in daemon.events()]
        assert "gateway.stop_left_in_progress" in events  # it really was mid-answer
        assert "question.answered" not in events
        assert events[-1] == "gateway.stopped"
        status = subprocess.run(
            ["mosquitto_sub", "-p", str(mosquitto.port), "-t", "edge/plant1/gateway/gw1/status",
             "-C", "1", "-W", "10", "-F", "%p"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert json.loads(status.stdout)["state"] == "offline"
        assert answers.read_text() == ""
        restarted = Daemon(config, log)
        try:
            restarted.wait_event("journal.recovered")
            deadline = time.monotonic() + 120
            while "long-1" not in answers.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            answer = json.loads(answers.read_text().strip().splitlines()[-1])
            assert answer["question_id"] == "long-1"
            assert answer["kind"] == "answer"
            assert answer["sources"]
        finally:
            assert restarted.stop() == 0
    finally:
        daemon.stop()
        sub.terminate()
        sub.wait()


async def test_sighup_changes_fallback_text_and_reports_what_needs_restart(
    mosquitto: Mosquitto, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(mosquitto)
    config = write_config(tmp_path / "gw.toml", settings, mosquitto.port, fallback="first text")
    daemon = Daemon(config, tmp_path / "gw.log")
    try:
        await asyncio.to_thread(daemon.wait_event, "gateway.ready")
        pid = daemon.proc.pid
        async with terminal(mosquitto.port, "t3") as term:
            qid = await term.ask(OFF_TOPIC)
            assert (await term.wait_for(qid, 120)).json["text"] == "first text"
            write_config(
                config, settings, mosquitto.port, fallback="second text",
                extra="[limits]\nmax_json_depth = 9\n",
            )  # fmt: skip
            seen = len(daemon.events())
            daemon.signal(signal.SIGHUP)
            event = await asyncio.to_thread(daemon.wait_event, "config.reloaded", 10, seen)
            assert event["applied"] == ["kb.fallback_text"]
            assert event["needs_restart"] == ["limits.max_json_depth"]
            assert event["changed"]["kb.fallback_text"] == ["first text", "second text"]
            qid = await term.ask(OFF_TOPIC + " (again)")
            assert (await term.wait_for(qid, 120)).json["text"] == "second text"
            # An invalid file changes nothing.
            config.write_text(config.read_text() + "[mqtt.bogus]\nx = 1\n")
            seen = len(daemon.events())
            daemon.signal(signal.SIGHUP)
            failed = await asyncio.to_thread(daemon.wait_event, "config.reload_failed", 10, seen)
            assert any("bogus" in e for e in failed["errors"]), failed
            qid = await term.ask(OFF_TOPIC + " (third)")
            assert (await term.wait_for(qid, 120)).json["text"] == "second text"
        assert daemon.proc.pid == pid
        assert daemon.proc.poll() is None
    finally:
        assert daemon.stop() == 0
