"""MQTT adapter: paho-mqtt on its own network thread, bridged into the asyncio loop.

Why paho and not aiomqtt here: the delivery guarantee needs manual acknowledgement (PUBACK only
after the journal write), which paho 2.x supports (`manual_ack=True`) and aiomqtt does not expose.
The session is persistent (`clean_start=False`, Session Expiry > 0) so questions published while
the gateway is down are queued by the broker; DESIGN.md measured 0/10 surviving without it.

Threading: paho calls us on its thread; every callback hops to the event loop with
`call_soon_threadsafe`, so all our state is touched from the loop only.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.bus import ROUTE_QUESTION, InboundMessage, MessageHandler, Subscription
from gateway.config import MqttConfig
from gateway.logging import get_logger
from models.health import BusHealth

log = get_logger(__name__)


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it untyped


class MqttPublishError(Exception):
    """The broker refused a publish (reason code in the message)."""


def topic_level_index(template: str) -> int:
    """Index of the single `+` level (the terminal id) in the question subscription."""
    return template.split("/").index("+")


def is_concrete_topic(topic: str) -> bool:
    """A topic we may publish to: non-empty, no wildcards, no NUL, within MQTT's length."""
    return (
        0 < len(topic.encode("utf-8", "surrogatepass")) <= 1024
        and not any(c in topic for c in "+#\x00")
        and not topic.startswith("$")
    )


class MqttAdapter:
    """MQTT 5 (default) or 3.1.1 bus adapter; see the module docstring."""

    name = "mqtt"
    broker_redelivers = False  # PUBACK follows the journal write; the journal answers after a crash

    def __init__(
        self,
        cfg: MqttConfig,
        *,
        client_id: str,
        question_topic: str,
        answer_topic_template: str,
        status_topic: str,
        online_payload: bytes,
        offline_payload: bytes,
        subscriptions: Sequence[Subscription] = (),
        max_partial_backlog: int = 64,
    ) -> None:
        self._cfg = cfg
        self._question_topic = question_topic
        self._terminal_level = topic_level_index(question_topic)
        self._answer_template = answer_topic_template
        self._status_topic = status_topic
        self._online = online_payload
        # Extra routes (e.g. device events). paho keeps the routing table: each filter gets its
        # own callback (`message_callback_add`), anything else reaches `on_message` (questions).
        self._subscriptions = tuple(subscriptions)
        self._v5 = cfg.protocol == "5"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: MessageHandler | None = None
        self._connected = asyncio.Event()
        self._first_connect: asyncio.Future[None] | None = None
        self._generation = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._inflight: dict[int, asyncio.Future[None]] = {}
        # QoS 0 partials handed to paho and not yet written to the socket (paho reports the
        # write through on_publish); bounded by max_partial_backlog.
        self._partials: set[int] = set()
        self._max_partials = max_partial_backlog
        self._stopping = False
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if self._v5 else False,
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=True,
            manual_ack=True,
        )
        self._client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._client.max_queued_messages_set(0)
        self._client.will_set(status_topic, offline_payload, qos=1, retain=True)
        if cfg.username is not None:
            password = cfg.resolved_password()
            self._client.username_pw_set(
                cfg.username, password.get_secret_value() if password else None
            )
        if cfg.tls.enabled:
            self._client.tls_set(
                ca_certs=str(cfg.tls.ca_file) if cfg.tls.ca_file else None,
                certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        for sub in self._subscriptions:
            self._client.message_callback_add(sub.topic_filter, self._route_callback(sub))
        self._client.on_publish = self._on_publish
        self._client.on_connect_fail = self._on_connect_fail

    # ---- public API -------------------------------------------------------------------------

    async def start(self, on_message: MessageHandler) -> None:
        self._loop = asyncio.get_running_loop()
        self._handler = on_message
        self._first_connect = self._loop.create_future()
        properties: Properties | None = None
        if self._v5:
            properties = _properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self._cfg.session_expiry_s
        self._client.connect_async(
            self._cfg.host,
            self._cfg.port,
            keepalive=self._cfg.keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()
        await self._first_connect

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        correlation_data: bytes | None = None,
        reliable: bool = True,
    ) -> None:
        info = self._client.publish(
            topic,
            payload,
            qos=1 if reliable else 0,
            retain=retain,
            properties=self._publish_properties(correlation_data),
        )
        if not reliable:
            return
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise MqttPublishError(f"publish to {topic!r} failed: {paho.error_string(info.rc)}")
        if info.is_published():
            return
        future = asyncio.get_running_loop().create_future()
        self._inflight[info.mid] = future
        await future

    def publish_partial(
        self, topic: str, payload: bytes, *, correlation_data: bytes | None = None
    ) -> bool:
        if not self.connected or len(self._partials) >= self._max_partials:
            return False
        properties = self._publish_properties(correlation_data)
        info = self._client.publish(topic, payload, qos=0, properties=properties)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return False
        if not info.is_published():
            self._partials.add(info.mid)
        return True

    def _publish_properties(self, correlation_data: bytes | None) -> Properties | None:
        """MQTT 5: JSON content type, and the requester's correlation data echoed."""
        if not self._v5:
            return None
        properties = _properties(PacketTypes.PUBLISH)
        properties.PayloadFormatIndicator = 1
        properties.ContentType = "application/json"
        if correlation_data is not None:
            properties.CorrelationData = correlation_data
        return properties

    def partial_topic(self, terminal_id: str, reply_to: str) -> str:
        """`{reply topic}/partial`: inside the terminal's own answer space, and never the reply
        topic itself, where a request/response client (mosquitto_rr) takes the first message
        as the answer."""
        return reply_to + "/partial"

    def answer_topic(self, terminal_id: str) -> str:
        return self._answer_template.replace("{terminal_id}", terminal_id)

    def reply_allowed(self, terminal_id: str, requested: str) -> bool:
        own = self.answer_topic(terminal_id)
        return is_concrete_topic(requested) and (
            requested == own or requested.startswith(own + "/")
        )

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def health(self) -> BusHealth:
        return BusHealth(
            connected=self.connected, reconnects=self._reconnects, last_error=self._last_error
        )

    async def stop(self, offline_payload: bytes | None = None) -> None:
        self._stopping = True
        if offline_payload is not None and self.connected:
            try:
                await asyncio.wait_for(
                    self.publish(self._status_topic, offline_payload, retain=True), timeout=5
                )
            except (TimeoutError, MqttPublishError) as exc:
                log.warning("mqtt.offline_status_not_sent", error=str(exc))
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        for future in self._inflight.values():
            if not future.done():
                future.cancel()
        self._inflight.clear()

    # ---- paho callbacks (paho's thread) -----------------------------------------------------

    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._call(self._connect_failed, f"connection refused: {reason}")
            return
        sock = client.socket()
        if isinstance(sock, socket.socket | ssl.SSLSocket):
            # DESIGN.md: QoS 1 request/reply 88 ms with Nagle, 0.7 ms without.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The generation is written on paho's thread only, before any message of this connection
        # is dispatched, so an ack captured on an older connection can never hit a reused mid.
        self._generation += 1
        share = f"$share/{self._cfg.shared_group}/" if self._cfg.shared_group else ""
        client.subscribe(share + self._question_topic, qos=1)
        for sub in self._subscriptions:  # in order: the broker replays retained ones in order
            client.subscribe((share if sub.shared else "") + sub.topic_filter, qos=1)
        client.publish(self._status_topic, self._online, qos=1, retain=True)
        self._call(self._connected_on_loop, bool(flags.session_present))

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._call(self._connect_failed, "connection failed")

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._generation += 1
        self._call(self._disconnected_on_loop, str(reason))

    def _route_callback(
        self, sub: Subscription
    ) -> Callable[[paho.Client, Any, paho.MQTTMessage], None]:
        # A filter without a wildcard (the sync barrier) has no sender: level -1.
        level = topic_level_index(sub.topic_filter) if "+" in sub.topic_filter.split("/") else -1

        def on_route_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
            self._on_message(client, userdata, msg, route=sub.route, level=level)

        return on_route_message

    def _on_message(
        self,
        client: paho.Client,
        userdata: Any,
        msg: paho.MQTTMessage,
        *,
        route: str = ROUTE_QUESTION,
        level: int | None = None,
    ) -> None:
        received_at = time.time()
        generation = self._generation
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        expiry = getattr(props, "MessageExpiryInterval", None) if props else None
        mid, qos = msg.mid, msg.qos
        index = self._terminal_level if level is None else level
        levels = msg.topic.split("/")
        sender = (levels[index] if 0 <= index < len(levels) else None) or None

        def ack() -> None:
            if qos > 0 and generation == self._generation:
                client.ack(mid, qos)

        inbound = InboundMessage(
            bus=self.name,
            topic=msg.topic,
            payload=bytes(msg.payload),
            terminal_id=sender if route == ROUTE_QUESTION else None,
            response_topic=response_topic if isinstance(response_topic, str) else None,
            correlation_data=bytes(correlation) if correlation is not None else None,
            expiry_s=float(expiry) if isinstance(expiry, int) else None,
            received_at=received_at,
            redelivered=bool(msg.dup),
            ack=ack,
            route=route,
            sender_id=sender,
        )
        self._call(self._deliver, inbound)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._call(self._published, mid, None if not reason.is_failure else str(reason))

    # ---- loop-side handlers -----------------------------------------------------------------

    def _deliver(self, inbound: InboundMessage) -> None:
        if self._handler is None or self._stopping:
            return  # not acknowledged: the broker redelivers it to the next session
        self._handler(inbound)

    def _connected_on_loop(self, session_present: bool) -> None:
        self._connected.set()
        log.info(
            "mqtt.connected",
            host=self._cfg.host,
            port=self._cfg.port,
            protocol=self._cfg.protocol,
            session_present=session_present,
        )
        if self._first_connect is not None and not self._first_connect.done():
            self._first_connect.set_result(None)

    def _connect_failed(self, error: str) -> None:
        self._last_error = error
        log.warning("mqtt.connect_failed", host=self._cfg.host, port=self._cfg.port, error=error)

    def _disconnected_on_loop(self, reason: str) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._partials.clear()  # paho drops unsent QoS 0 messages with the connection
        if was_connected and not self._stopping:
            self._reconnects += 1
            self._last_error = f"disconnected: {reason}"
            log.warning("mqtt.disconnected", reason=reason)

    def _published(self, mid: int, error: str | None) -> None:
        self._partials.discard(mid)
        future = self._inflight.pop(mid, None)
        if future is None or future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(MqttPublishError(f"broker refused publish: {error}"))
