"""The daemon as an operator runs it: `edge-gateway run` in a process, asked by stock clients."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def cli_args(settings_overrides: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "gateway.cli"]
    for item in settings_overrides:
        argv += ["--set", item]
    return argv


@pytest.fixture
def daemon(
    mosquitto: Mosquitto, make_settings: SettingsFactory, tmp_path: Path
) -> Iterator[tuple[list[str], subprocess.Popen[bytes]]]:
    settings = make_settings(mosquitto)
    overrides = [
        f"data_dir={settings.data_dir}",
        f"cache_dir={settings.cache_dir}",
        f"mqtt.port={mosquitto.port}",
        "worker.max_tokens=48",
        "log.format=json",
    ]
    base = cli_args(overrides)
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen([*base, "run"], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    status = subprocess.run(
        ["mosquitto_sub", "-p", str(mosquitto.port), "-t", "edge/plant1/gateway/gw1/status",
         "-C", "1", "-W", "60", "-F", "%p"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    # The retained status may still say offline from a previous run; here the broker is new.
    assert json.loads(status.stdout)["state"] == "online", (status, proc.poll())
    yield base, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_mosquitto_rr_gets_the_answer_with_sources(
    daemon: tuple[list[str], subprocess.Popen[bytes]], mosquitto: Mosquitto
) -> None:
    result = subprocess.run(
        ["mosquitto_rr", "-V", "5", "-p", str(mosquitto.port), "-q", "1",
         "-t", "edge/plant1/terminal/t1/question", "-e", "edge/plant1/terminal/t1/answer/rr",
         "-m", json.dumps({"id": "rr-1", "text": "What does alarm E203 on press P2 mean?"}),
         "-W", "120"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["kind"] == "answer"
    assert answer["question_id"] == "rr-1"
    assert answer["sources"]
    assert any("press-p2-manual" in s["document"] for s in answer["sources"])


def test_ask_command_prints_answer_and_sources_then_sigterm_exits_cleanly(
    daemon: tuple[list[str], subprocess.Popen[bytes]], mosquitto: Mosquitto
) -> None:
    base, proc = daemon
    result = subprocess.run(
        [*base, "ask", "--terminal", "t7", "How do I replace the pressure filter on press P2?"],
        capture_output=True, text=True, cwd=REPO, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Sources:" in result.stdout
    assert "press-p2-manual" in result.stdout
    off = subprocess.run(
        [*base, "ask", "--terminal", "t7", "Who won the football world cup in 1998?"],
        capture_output=True, text=True, cwd=REPO, timeout=180, check=False,
    )  # fmt: skip
    assert off.returncode == 0, off.stderr
    assert "fallback" in off.stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    status = subprocess.run(
        ["mosquitto_sub", "-p", str(mosquitto.port), "-t", "edge/plant1/gateway/gw1/status",
         "-C", "1", "-W", "10", "-F", "%p"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert json.loads(status.stdout)["state"] == "offline"
