"""`edge-gateway ask`: a terminal in a command, speaking MQTT exactly as a handheld would.

It uses aiomqtt (a plain asyncio client: a terminal needs no manual acks) and MQTT 5
request/response: a Response Topic under the terminal's own answer topic and fresh Correlation
Data. Over MQTT 3.1.1 it listens on the terminal's answer topic and matches the question id.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.cli.exits import EXIT_ERROR_REPLY, EXIT_OK, EXIT_TIMEOUT
from gateway.config import Settings, read_secret_file
from models.answer import Answer
from models.errors import ErrorReply

NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
"""A terminal asks, then waits: with Nagle's algorithm its next question waits for the TCP
acknowledgement of its last PUBACK, which the broker delays by 40 ms (measured: a cached answer
50 ms at p50 with it, 6 ms without). Every request/reply client should set TCP_NODELAY."""


def question_topic(settings: Settings, terminal: str) -> str:
    """The concrete question topic of one terminal (the subscription's `+` filled in)."""
    levels = settings.topic(settings.mqtt.question_topic).split("/")
    return "/".join(terminal if level == "+" else level for level in levels)


def answer_topic(settings: Settings, terminal: str) -> str:
    return settings.topic(settings.mqtt.answer_topic, terminal_id=terminal)


def _tls(settings: Settings) -> aiomqtt.TLSParameters | None:
    tls = settings.mqtt.tls
    if not tls.enabled:
        return None
    return aiomqtt.TLSParameters(
        ca_certs=str(tls.ca_file) if tls.ca_file else None,
        certfile=str(tls.cert_file) if tls.cert_file else None,
        keyfile=str(tls.key_file) if tls.key_file else None,
        cert_reqs=ssl.CERT_REQUIRED,
    )


async def ask(
    settings: Settings,
    text: str,
    *,
    terminal: str,
    timeout_s: float,
    username: str | None = None,
    password: str | None = None,
    conversation: str | None = None,
) -> dict[str, Any]:
    """Publish one question and return the reply (answer or error) as parsed JSON."""
    v5 = settings.mqtt.protocol == "5"
    question_id = "ask-" + secrets.token_hex(8)
    own = answer_topic(settings, terminal)
    reply_topic = f"{own}/{question_id}" if v5 else own
    correlation = secrets.token_bytes(16)
    question: dict[str, str] = {"id": question_id, "text": text}
    if conversation is not None:
        question["conversation_id"] = conversation
    payload = json.dumps(question).encode()
    properties: Properties | None = None
    if v5:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.ResponseTopic = reply_topic
        properties.CorrelationData = correlation
    async with aiomqtt.Client(
        settings.mqtt.host,
        settings.mqtt.port,
        username=username,
        password=password,
        identifier=f"edge-gateway-ask-{question_id}",
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        tls_params=_tls(settings),
        socket_options=NO_DELAY,
    ) as client:
        await client.subscribe(reply_topic, qos=1)
        await client.publish(
            question_topic(settings, terminal), payload, qos=1, properties=properties
        )
        async with asyncio.timeout(timeout_s):
            async for message in client.messages:
                reply = json.loads(bytes(message.payload))
                if isinstance(reply, dict) and reply.get("question_id") == question_id:
                    return reply
    raise TimeoutError  # pragma: no cover - the loop only ends by timeout or return


def format_answer(answer: Answer) -> str:
    lines = [answer.text, ""]
    if answer.history_turns:
        lines.append(f"(follow-up: {answer.history_turns} earlier turn(s) of the conversation)")
    if answer.fallback:
        lines.append("(fallback: the knowledge base has nothing close enough to this question)")
    if answer.sources:
        lines.append("Sources:")
        for number, source in enumerate(answer.sources, 1):
            where = source.section or "-"
            page = f", page {source.page}" if source.page is not None else ""
            lines.append(
                f"  [{number}] {source.document} — {where}{page} (score {source.score:.2f})"
            )
    lines.append(
        f"({answer.model or 'no model'}; {answer.latency.total_ms:.0f} ms, "
        f"{answer.usage.completion_tokens} tokens)"
    )
    return "\n".join(lines)


def ask_command(
    settings: Settings,
    text: str,
    *,
    terminal: str,
    timeout_s: float,
    raw: bool,
    username: str | None,
    password_file: Path | None,
    conversation: str | None = None,
) -> int:
    password = read_secret_file(password_file).get_secret_value() if password_file else None
    return _ask_and_print(
        settings,
        text,
        terminal=terminal,
        timeout_s=timeout_s,
        username=username,
        password=password,
        conversation=conversation,
        raw=raw,
    )


def chat_command(
    settings: Settings,
    *,
    terminal: str,
    timeout_s: float,
    username: str | None,
    password_file: Path | None,
    conversation: str | None = None,
    lines: Iterator[str] | None = None,
) -> int:
    """`edge-gateway chat`: one conversation, a question per line, until an empty line or EOF.

    Each question is a turn of the same conversation, so follow-ups ("and how do I fix it?")
    are answered in its context, as a terminal holding a conversation would ask them."""
    conversation = conversation or "chat-" + secrets.token_hex(6)
    password = read_secret_file(password_file).get_secret_value() if password_file else None
    print(f"conversation {conversation} as terminal {terminal}; an empty line ends it")
    code = EXIT_OK
    for line in lines if lines is not None else _prompted_lines():
        if not line.strip():
            break
        result = _ask_and_print(
            settings,
            line.strip(),
            terminal=terminal,
            timeout_s=timeout_s,
            username=username,
            password=password,
            conversation=conversation,
        )
        code = result if result != EXIT_OK else code  # the last failure, after every line
        print()
    return code


def _ask_and_print(
    settings: Settings,
    text: str,
    *,
    terminal: str,
    timeout_s: float,
    username: str | None,
    password: str | None,
    conversation: str | None,
    raw: bool = False,
) -> int:
    """One question, its reply printed (or the error on stderr); the command's exit code."""
    try:
        reply = asyncio.run(
            ask(
                settings,
                text,
                terminal=terminal,
                timeout_s=timeout_s,
                username=username,
                password=password,
                conversation=conversation,
            )
        )
    except TimeoutError:
        print(f"no reply within {timeout_s:.0f} s (is the gateway running?)", file=sys.stderr)
        return EXIT_TIMEOUT
    except aiomqtt.MqttError as exc:
        print(f"MQTT error: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    if raw:
        print(json.dumps(reply, indent=2))
    if reply.get("kind") == "error":
        error = ErrorReply.model_validate_json(json.dumps(reply), strict=False)
        if not raw:
            print(f"error [{error.code}]: {error.message}", file=sys.stderr)
        return EXIT_ERROR_REPLY
    if not raw:
        print(format_answer(Answer.model_validate_json(json.dumps(reply), strict=False)))
    return EXIT_OK


def _prompted_lines() -> Iterator[str]:
    while True:
        try:
            yield input("> ")
        except EOFError:
            return
