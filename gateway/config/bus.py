"""The bus sections: [mqtt] (with [mqtt.tls]), [nats] and [nats.jetstream]."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.config.base import (
    Port,
    Section,
    SubjectTemplate,
    TopicTemplate,
    list_from_text,
    read_secret_file,
)


class TlsConfig(Section):
    enabled: bool = Field(default=False, description="Connect with TLS.")
    ca_file: Path | None = Field(default=None, description="CA bundle; system store when unset.")
    cert_file: Path | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: Path | None = Field(default=None, description="Client private key (mutual TLS).")


class MqttConfig(Section):
    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="Broker host name or address.")
    port: Port = 1883
    protocol: Literal["5", "3.1.1"] = Field(default="5", description="MQTT protocol version.")
    client_id: str = Field(
        default="",
        max_length=128,
        description="Stable client id of the persistent session; default edge-gateway-{instance}.",
    )
    session_expiry_s: int = Field(
        default=7 * 24 * 3600,
        ge=0,
        description="How long the broker keeps our session (queued questions) while we are down.",
    )
    keepalive_s: int = Field(default=30, ge=5, le=65_535)
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(
        default=None, description="Read the password from this file (or systemd credential)."
    )
    tls: TlsConfig = TlsConfig()
    reconnect_min_s: int = Field(default=1, ge=1, description="First reconnect delay (doubles).")
    reconnect_max_s: int = Field(default=30, ge=1, description="Longest reconnect delay.")
    shared_group: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="MQTT 5 shared subscription group: instances in one group split the questions.",
    )
    question_topic: TopicTemplate = Field(
        default="edge/{site}/terminal/+/question",
        description="Subscription for questions; the single `+` level is the terminal id.",
    )
    answer_topic: TopicTemplate = Field(
        default="edge/{site}/terminal/{terminal_id}/answer",
        description=(
            "Where answers go when the question has no MQTT 5 response topic. A response topic is "
            "accepted only if it is this topic or below it."
        ),
    )
    status_topic: TopicTemplate = "edge/{site}/gateway/{instance}/status"
    health_topic: TopicTemplate = "edge/{site}/gateway/{instance}/health"

    @model_validator(mode="after")
    def _one_terminal_wildcard(self) -> MqttConfig:
        levels = self.question_topic.split("/")
        if levels.count("+") != 1 or "#" in levels:
            raise ValueError("question_topic must contain exactly one '+' level (the terminal id)")
        if "{terminal_id}" not in self.answer_topic:
            raise ValueError("answer_topic must contain {terminal_id}")
        return self

    def resolved_password(self) -> SecretStr | None:
        if self.password_file is not None:
            return read_secret_file(self.password_file)
        return self.password


class JetStreamConfig(Section):
    """JetStream mode: a work-queue stream of questions and one durable pull consumer.

    The consumer settings are applied on every start and read back from the server; a server
    that reports other values refuses the start (a silently ignored AckWait is how questions
    get answered twice or never).
    """

    stream: str = Field(
        default="EDGE_{site}_QUESTIONS",
        pattern=r"^[^\s.*>]+$",
        max_length=200,
        description="Work-queue stream holding the question subjects ({site} allowed).",
    )
    consumer: str = Field(
        default="edge-gateway",
        pattern=r"^[^\s.*>]+$",
        max_length=200,
        description="Durable pull consumer shared by every gateway instance.",
    )
    storage: Literal["file", "memory"] = Field(
        default="file", description="file survives a server restart; memory does not."
    )
    replicas: int = Field(default=1, ge=1, le=5, description="Stream replicas (1 on one box).")
    duplicate_window_s: float = Field(
        default=120.0, gt=0, description="A second question with the same Nats-Msg-Id is dropped."
    )
    max_age_s: float = Field(
        default=86_400.0, ge=0, description="Unanswered questions older than this are dropped."
    )
    ack_wait_s: float = Field(
        default=30.0,
        gt=0,
        description="Redelivered if not acknowledged (answered) nor touched within this time.",
    )
    max_deliver: int = Field(
        default=5, ge=1, description="Deliveries before the dead-letter path gives up on it."
    )
    max_ack_pending: int = Field(
        default=32,
        ge=1,
        description="Questions one consumer holds unanswered; at most queue.max_depth.",
    )
    backoff_s: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=list,
        description="Redelivery delays (replace ack_wait per delivery); fewer than max_deliver.",
    )
    _backoff_list = field_validator("backoff_s", mode="before")(list_from_text)

    state_stream: str = Field(
        default="EDGE_{site}_STATE",
        pattern=r"^[^\s.*>]+$",
        max_length=200,
        description=(
            "Last-value stream (one message per subject) over the diagnosis subjects, so a "
            "SCADA client that connects later reads the current state ({site} allowed)."
        ),
    )
    fetch_batch: int = Field(default=16, ge=1, le=1_024, description="Messages per pull.")
    fetch_timeout_s: float = Field(default=5.0, gt=0, description="Long-poll time of one pull.")

    @model_validator(mode="after")
    def _backoff_fits(self) -> JetStreamConfig:
        if self.backoff_s and len(self.backoff_s) >= self.max_deliver:
            raise ValueError("backoff_s must have fewer entries than max_deliver")
        return self

    @property
    def progress_interval_s(self) -> float:
        """How often held questions are touched (`in_progress`): well inside the ack wait."""
        first = self.backoff_s[0] if self.backoff_s else self.ack_wait_s
        return max(0.05, min(self.ack_wait_s, first) / 3)


class NatsConfig(Section):
    """NATS: core request/reply with a queue group, or JetStream (docs/nats-and-scale-out.md)."""

    enabled: bool = False
    servers: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1
    )
    name: str = Field(
        default="", max_length=128, description="Connection name; default edge-gateway-{instance}."
    )
    mode: Literal["core", "jetstream"] = Field(
        default="core",
        description="core: at-most-once request/reply; jetstream: durable, ack after the answer.",
    )
    question_subject: SubjectTemplate = Field(
        default="edge.{site}.question.*",
        description="Subscription for questions; the single `*` token is the terminal id.",
    )
    answer_subject: SubjectTemplate = Field(
        default="edge.{site}.answer.{terminal_id}",
        description="Where answers go when the question names no (allowed) reply subject.",
    )
    reply_prefixes: list[SubjectTemplate] = Field(
        default_factory=lambda: ["_INBOX.{terminal_id}."],
        description=(
            "A requester-chosen reply subject is honoured only if it is the terminal's answer "
            "subject, below it, or starts with one of these ({terminal_id} allowed). The default "
            "is each terminal's own inbox prefix: a terminal sets its client's inbox prefix to "
            "_INBOX.<terminal id> (nats-py inbox_prefix, Go CustomInboxPrefix, nats CLI "
            "--inbox-prefix), and cannot name another terminal's inbox."
        ),
    )
    status_subject: SubjectTemplate = "edge.{site}.gateway.{instance}.status"
    health_subject: SubjectTemplate = "edge.{site}.gateway.{instance}.health"
    queue_group: str = Field(
        default="edge-gateway",
        pattern=r"^[^\s.*>]+$",
        description="Core mode: instances in one queue group split the questions.",
    )
    user: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = Field(default=None, description="Password from a file/credential.")
    token: SecretStr | None = None
    token_file: Path | None = Field(default=None, description="Token from a file/credential.")
    nkey_seed_file: Path | None = Field(default=None, description="NKey seed file (SU...).")
    creds_file: Path | None = Field(default=None, description="JWT + NKey .creds file.")
    tls: TlsConfig = TlsConfig()
    connect_timeout_s: float = Field(default=2.0, gt=0)
    reconnect_wait_s: float = Field(
        default=2.0,
        gt=0,
        description="Pause between reconnect attempts. Attempts are unlimited (never give up).",
    )
    ping_interval_s: float = Field(default=20.0, gt=0, description="Liveness ping period.")
    publish_timeout_s: float = Field(
        default=5.0, gt=0, description="Flush / JetStream API / ack confirmation timeout."
    )
    jetstream: JetStreamConfig = JetStreamConfig()

    _lists = field_validator("servers", "reply_prefixes", mode="before")(list_from_text)

    @model_validator(mode="after")
    def _one_terminal_wildcard(self) -> NatsConfig:
        tokens = self.question_subject.split(".")
        if tokens.count("*") != 1 or ">" in tokens:
            raise ValueError("question_subject must contain exactly one '*' token (terminal id)")
        if "{terminal_id}" not in self.answer_subject:
            raise ValueError("answer_subject must contain {terminal_id}")
        return self

    def resolved_password(self) -> SecretStr | None:
        if self.password_file is not None:
            return read_secret_file(self.password_file)
        return self.password

    def resolved_token(self) -> SecretStr | None:
        if self.token_file is not None:
            return read_secret_file(self.token_file)
        return self.token
