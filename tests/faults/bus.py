"""Resilient MQTT clients for the fault suite: terminals that survive a broker restart, and a
spy that records every publish on the broker.

paho (on its own thread) rather than aiomqtt: a terminal here must behave like a real handheld
whose broker dies under it: persistent session (`clean_start=False`, Session Expiry), automatic
reconnect, and QoS 1 publishes kept in paho's own outbox and resent after the reconnect.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes
    correlation: bytes | None
    retained: bool
    at: float

    def json(self) -> dict[str, Any] | None:
        """The payload as a JSON object; None for anything else (a spy sees hostile input)."""
        if len(self.payload) > 2**20 or self.payload[:1] != b"{":
            return None
        try:
            value = json.loads(self.payload)
        except (ValueError, RecursionError):
            return None
        return value if isinstance(value, dict) else None


@dataclass(frozen=True, slots=True)
class Tls:
    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None


class MqttClient:
    """One paho client with a persistent session; records what it receives."""

    def __init__(
        self,
        port: int,
        *,
        client_id: str | None = None,
        subscribe: tuple[str, ...] = (),
        username: str | None = None,
        password: str | None = None,
        tls: Tls | None = None,
        persistent: bool = True,
    ) -> None:
        self.port = port
        self.client_id = client_id or f"fault-{secrets.token_hex(4)}"
        self.received: list[Received] = []
        self.connects = 0
        self.refusals: list[str] = []
        self.suback_failures: list[str] = []
        self._topics = subscribe
        self._lock = threading.Condition()
        self._persistent = persistent
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=True,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(0.1, 1)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(
                ca_certs=str(tls.ca_file),
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout_s: float = 15.0) -> MqttClient:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if self._persistent:
            props.SessionExpiryInterval = 3600
        self.client.connect_async(
            "127.0.0.1", self.port, clean_start=not self._persistent, properties=props
        )
        self.client.loop_start()
        self.wait(lambda: self.connects > 0 or bool(self.refusals), timeout_s, "connect")
        if self.refusals and self.connects == 0:
            self.stop()
            raise ConnectionRefusedError(self.refusals[-1])
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> MqttClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- traffic ------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        expiry_s: int | None = None,
    ) -> paho.MQTTMessageInfo:
        props: Properties | None = None
        if response_topic is not None or correlation is not None or expiry_s is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
            if expiry_s is not None:
                props.MessageExpiryInterval = expiry_s
        return self.client.publish(topic, payload, qos=qos, properties=props)

    def ask(self, site: str, terminal_id: str, qid: str, text: str, **kw: Any) -> None:
        body = json.dumps({"id": qid, "text": text}).encode()
        self.publish(f"edge/{site}/terminal/{terminal_id}/question", body, **kw)

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait(self, predicate: Callable[[], bool], timeout_s: float, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self.client_id}: {what} not within {timeout_s} s")
                self._lock.wait(min(left, 0.5))

    def question_ids(self) -> dict[str, list[Received]]:
        """Every received reply grouped by the question id it carries."""
        found: dict[str, list[Received]] = {}
        for item in self.snapshot():
            body = item.json()
            if body is not None and isinstance(body.get("question_id"), str):
                found.setdefault(body["question_id"], []).append(item)
        return found

    def wait_ids(self, qids: set[str], timeout_s: float) -> None:
        def done() -> bool:
            seen = set()
            for item in self.received:
                body = item.json()
                if body is not None:
                    seen.add(body.get("question_id"))
            return qids <= seen

        self.wait(done, timeout_s, f"replies to {len(qids)} questions")

    # ---- paho callbacks -----------------------------------------------------------------------

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        with self._lock:
            if reason.is_failure:
                self.refusals.append(str(reason))
                client.disconnect()  # a refused client must not retry forever
            else:
                self.connects += 1
            self._lock.notify_all()
        if not reason.is_failure:
            for topic in self._topics:
                client.subscribe(topic, qos=1)

    def _on_subscribe(self, _c: Any, _u: Any, _mid: int, codes: list[Any], _p: Any) -> None:
        with self._lock:
            self.suback_failures += [str(c) for c in codes if c.is_failure]

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        corr = getattr(props, "CorrelationData", None) if props else None
        item = Received(
            msg.topic,
            bytes(msg.payload),
            bytes(corr) if corr is not None else None,
            bool(msg.retain),
            time.monotonic(),
        )
        with self._lock:
            self.received.append(item)
            self._lock.notify_all()
