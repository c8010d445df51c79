"""Conversations end to end (issue 12): a gateway process on a real mosquitto with the demo
knowledge base and the bundled models; terminals ask with the gateway's own `ask` client.

A three-turn conversation whose second and third questions name nothing themselves retrieves
the sections the conversation is about (the E203 section of the P2 manual, then the P2 rows of
the maintenance log that name E203), across a `kill -9` of the gateway between turns; the same
follow-ups asked alone do not; another terminal naming the conversation's id gets a fresh
one; the answer cache answers a repeated question asked alone, never a turn of a conversation."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.ask import ask
from gateway.config import Settings
from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.daemon import REPO, Daemon
from tests.faults.conftest import write_gateway_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

FIRST = "What does alarm E203 on press P2 mean?"
FIX = "And how do I fix it?"
LAST_TIME = "What did the technicians do about it last time?"


def sections(reply: dict[str, Any]) -> list[str]:
    return [str(s["section"]) for s in reply.get("sources", [])]


def turn(
    settings: Settings, text: str, *, terminal: str = "t1", conversation: str | None = "c1"
) -> dict[str, Any]:
    reply = asyncio.run(
        ask(settings, text, terminal=terminal, timeout_s=240, conversation=conversation)
    )
    assert reply["kind"] == "answer", reply
    return reply


@pytest.fixture
def gateway(
    mosquitto: Mosquitto, make_settings: SettingsFactory, tmp_path: Path
) -> tuple[Settings, Path]:
    settings = make_settings(mosquitto, "answer.mode=extractive", "answer_cache.enabled=true")
    config = write_gateway_config(tmp_path, settings, f"[mqtt]\nport = {mosquitto.port}\n")
    return settings, config


def test_follow_ups_retrieve_the_conversation_s_sections_across_a_gateway_kill(
    gateway: tuple[Settings, Path], tmp_path: Path
) -> None:
    settings, config = gateway
    log = tmp_path / "gw.log"
    daemon = Daemon(config, log)
    try:
        daemon.wait_event("gateway.ready", 120)
        first = turn(settings, FIRST)
        assert (first["conversation_id"], first["history_turns"]) == ("c1", 0)
        assert any("E203" in s for s in sections(first)), sections(first)

        seen = len(daemon.events())
        daemon.signal(signal.SIGKILL)
        daemon.proc.wait(10)
        daemon = Daemon(config, log)
        daemon.wait_event("gateway.ready", 120, seen)

        # Asked alone, the follow-up names nothing the E203 section is about.
        alone_fix = turn(settings, FIX, conversation=None)
        assert alone_fix["history_turns"] == 0
        assert alone_fix["conversation_id"] is None
        assert not sections(alone_fix) or "E203" not in sections(alone_fix)[0]

        fix = turn(settings, FIX)
        assert (fix["conversation_id"], fix["history_turns"]) == ("c1", 1)
        assert "E203" in sections(fix)[0], sections(fix)
        assert not fix["cached"]
        assert not fix["fallback"]

        # Turn 3 asks the maintenance log about "it": E203 on P2 (two turns back).
        last = turn(settings, LAST_TIME)
        assert last["history_turns"] == 2
        first_source = last["sources"][0]
        assert first_source["document"].endswith("maintenance-log.csv")
        assert "P2" in first_source["section"]
        assert "alarm_or_work_order: E203" in first_source["quote"], first_source
        alone_last = turn(settings, LAST_TIME, terminal="t3", conversation=None)
        assert "alarm_or_work_order: E203" not in alone_last["sources"][0]["quote"]

        # Another terminal naming t1's conversation id starts a conversation of its own.
        other = turn(settings, FIX, terminal="t2")
        assert (other["conversation_id"], other["history_turns"]) == ("c1", 0)
        assert sections(other) == sections(alone_fix)

        # The answer cache answers a question asked alone again, never a turn of a conversation.
        turn(settings, FIRST, terminal="t4", conversation=None)
        assert turn(settings, FIRST, terminal="t4", conversation=None)["cached"]
        turn(settings, "What does alarm E305 on press P2 mean?", terminal="t4", conversation="c2")
        in_conversation = turn(settings, FIRST, terminal="t4", conversation="c2")
        assert in_conversation["history_turns"] == 1
        assert not in_conversation["cached"]
    finally:
        assert daemon.stop() == 0


def test_chat_holds_one_conversation_a_question_per_line(
    gateway: tuple[Settings, Path], tmp_path: Path
) -> None:
    _, config = gateway
    daemon = Daemon(config, tmp_path / "gw.log")
    try:
        daemon.wait_event("gateway.ready", 120)
        chat = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "--config", str(config), "chat",
             "--terminal", "t9", "--timeout", "240"],
            input=f"{FIRST}\n{FIX}\n\nnot asked: the empty line ended the chat\n",
            capture_output=True, text=True, timeout=600, check=False, cwd=REPO,
        )  # fmt: skip
    finally:
        assert daemon.stop() == 0
    assert chat.returncode == 0, chat.stderr
    header = chat.stdout.splitlines()[0]
    assert header.startswith("conversation chat-"), chat.stdout
    assert header.endswith("as terminal t9; an empty line ends it")
    _, first, second, last = chat.stdout.split("\n> ")  # the prompt before each line read
    assert "E203 Hydraulic pressure low" in first
    assert "(follow-up" not in first
    assert "(follow-up: 1 earlier turn(s) of the conversation)" in second
    assert "Acknowledge E203 with RESET" in second
    assert last == ""  # the empty line ended it: nothing after was asked
    answered = [e for e in daemon.events() if e.get("event") == "question.answered"]
    assert len(answered) == 2
