"""The daemon as systemd runs it: notify socket + watchdog, SIGTERM mid-answer, SIGHUP reload."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import signal
import socket
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

    def wait_pings(self, n: int, after: float, timeout_s: float = 60.0) -> list[float]:
        """The first `n` pings after `after`, waited for (the timeout is a bound, not a
        measurement)."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.pings(after, float("inf"))
            if len(found) >= n:
                return found[:n]
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {n} pings in {timeout_s} s")
            time.sleep(0.02)

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
        connecting_at = listener.first("STATUS=connecting to mqtt")
        # Model loaded, broker down: starting, pinging (two pings waited for), and not ready.
        listener.wait_pings(2, after=connecting_at)
        assert "READY=1" not in [line for _, line in listener.lines]
        assert any(line.startswith("EXTEND_TIMEOUT_USEC=") for _, line in listener.lines)
        broker_started = time.monotonic()
        broker.start()
        ready_at = listener.first("READY=1")
        assert ready_at > broker_started
        assert daemon.wait_event("gateway.ready", timeout_s=5)
        # Cadence: the interval is a parameter (half of WATCHDOG_USEC = 1 s), read back from
        # the daemon; the pings are counted, not timed (their timing is the kernel's and the
        # machine's load's, see tests/test_sdnotify.py for the protocol).
        enabled = daemon.wait_event("systemd.notify_enabled", timeout_s=5)
        assert enabled["watchdog_interval_s"] == 0.5, enabled
        pings = listener.wait_pings(4, after=ready_at)
        print(f"watchdog: {len(pings)} pings after READY")
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
            # The answer after the restart is the only message the terminal ever got: nothing
            # was answered before the SIGTERM or while the gateway was down.
            lines = answers.read_text().strip().splitlines()
            assert len(lines) == 1, lines
            answer = json.loads(lines[0])
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
        # Reloaded in place: the process we started is still the one running and answering,
        # neither it nor its model worker restarted, and its counters (in memory) span the
        # reload: three questions received, three fallbacks, in one health report.
        assert daemon.proc.poll() is None
        events = [e["event"] for e in daemon.events()]
        assert events.count("gateway.ready") == 1, events
        assert events.count("worker.started") == 1, events
        async with terminal(
            mosquitto.port, "ops", subscribe=("edge/plant1/gateway/gw1/health",)
        ) as ops:
            # The first one is the retained (maybe older) report; the second is published
            # after the third answer.
            health = (await ops.wait_count(2, timeout_s=30))[-1].json
        assert health["process"]["pid"] == daemon.proc.pid
        assert health["counters"]["received"] == 3, health["counters"]
        assert health["counters"]["fallback"] == 3, health["counters"]
    finally:
        assert daemon.stop() == 0
