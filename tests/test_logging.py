"""Log output follows the current stderr, and events are JSON lines off a TTY."""

from __future__ import annotations

import io
import json
import sys

import pytest

from gateway.logging import configure_logging, get_logger


def test_events_go_to_the_stderr_of_the_moment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("info", "auto")
    get_logger("test").info("first.event", message_id="q-1")
    first.close()  # what a test runner does to its capture after a test
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    get_logger("test").info("second.event", message_id="q-2", topic="edge/a")
    event = json.loads(second.getvalue().strip())
    assert event["event"] == "second.event"
    assert event["message_id"] == "q-2"
    assert event["level"] == "info"
