"""Configuration as data: one pydantic-settings model, read from TOML, environment and CLI.

Precedence, highest first: `--set key.path=value` flags, `EDGE_GATEWAY_*` environment variables
(nested keys joined with `__`, e.g. `EDGE_GATEWAY_MQTT__PORT=1884`), the TOML file, defaults.
Secrets are `SecretStr`, so every dump masks them; a `*_file` twin reads them from a file, and a
bare file name is looked up in systemd's `$CREDENTIALS_DIRECTORY` first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "EDGE_GATEWAY_"
DEFAULT_CONFIG_PATHS = (Path("/etc/edge-gateway/gateway.toml"),)

Port = Annotated[int, Field(ge=1, le=65_535)]
TopicTemplate = Annotated[str, Field(min_length=1, max_length=512)]


class Section(BaseModel):
    """Every section refuses unknown keys: a misspelt option is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def read_secret_file(path: Path) -> SecretStr:
    """Read a secret file; a bare name resolves inside systemd's credentials directory."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and not path.is_absolute() and (Path(creds) / path).exists():
        path = Path(creds) / path
    return SecretStr(path.read_text(encoding="utf-8").rstrip("\r\n"))


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


def list_from_text(value: Any) -> Any:
    """Let `--set nats.servers=a,b` (or a JSON list) set a list: CLI values arrive as text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


SubjectTemplate = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[^\s]+$")]


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
    """NATS bus: core request/reply with a queue group, or JetStream (see README)."""

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
        default_factory=lambda: ["_INBOX."],
        description=(
            "A requester-chosen reply subject is honoured only if it is the terminal's answer "
            "subject, below it, or starts with one of these ({terminal_id} allowed)."
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


class JournalConfig(Section):
    path: Path = Field(default=Path("journal.sqlite3"), description="Relative to data_dir.")
    retention_h: float = Field(
        default=72.0, gt=0, description="Answered questions are kept this long for deduplication."
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="FULL survives power loss; NORMAL only process crashes, and is faster.",
    )


class KnowledgeBaseConfig(Section):
    path: Path = Field(default=Path("kb.sqlite3"), description="Relative to data_dir.")
    embedding_model: Path | None = Field(
        default=None,
        description=(
            "A GGUF embedding model. Unset: all-MiniLM-L6-v2 from the bundled package, converted "
            "to GGUF once into cache_dir."
        ),
    )
    chunk_chars: int = Field(default=1_200, ge=200, le=8_000)
    chunk_overlap_chars: int = Field(default=150, ge=0, le=2_000)
    top_k: int = Field(default=4, ge=1, le=16)
    similarity_threshold: float = Field(
        default=0.30,
        ge=-1.0,
        le=1.0,
        description=(
            "Below this best cosine similarity the fallback is sent and the model is not asked. "
            "Calibrated for all-MiniLM-L6-v2; rerun `edge-gateway kb calibrate` for another model."
        ),
    )
    fallback_text: str = Field(
        default=(
            "I could not find this in the plant documentation. Please contact technical support."
        ),
        min_length=1,
        max_length=2_000,
    )


class WorkerConfig(Section):
    model_path: Path | None = Field(
        default=None,
        description="A GGUF chat model. Unset: the bundled SmolLM2-135M-Instruct.",
    )
    n_ctx: int = Field(default=2_048, ge=256, le=131_072, description="Context window in tokens.")
    n_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description=(
            "Inference threads; 0 means all the cores the worker may use. Never more than those "
            "(CPU affinity, and cpu_quota_percent / 100): one worker, so workers x threads <= "
            "cores; more only slows llama.cpp down (README, Performance)."
        ),
    )
    flash_attn: bool = True
    prefix_reuse: bool = Field(
        default=True,
        description=(
            "Keep the evaluated prompt in llama.cpp's KV cache and evaluate only what differs on "
            "the next request (the fixed instructions are not evaluated again). Off: every "
            "prompt is evaluated from scratch (for benchmarks)."
        ),
    )
    max_tokens: int = Field(default=192, ge=1, le=8_192)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    start_timeout_s: float = Field(default=60.0, gt=0)
    memory_limit_mb: int = Field(
        default=1_024, ge=64, description="Hard memory limit of the worker (cgroup or RLIMIT_AS)."
    )
    cpu_quota_percent: int = Field(
        default=0, ge=0, description="CPU quota in percent of one core (200 = two cores); 0 = none."
    )
    restart_budget: int = Field(
        default=5, ge=0, description="Restarts allowed within restart_window_s before `degraded`."
    )
    restart_window_s: float = Field(default=300.0, gt=0)
    restart_backoff_s: float = Field(default=0.5, ge=0)
    cgroup_parent: Path | None = Field(
        default=None,
        description="A writable cgroup directory to create the worker's group in; auto when unset.",
    )


class AnswerCacheConfig(Section):
    """Near-identical questions answered again from memory (see gateway/answer_cache.py)."""

    enabled: bool = True
    similarity: float = Field(
        default=0.95,
        ge=0.5,
        le=1.0,
        description="Cosine similarity of the question embeddings needed to reuse an answer.",
    )
    ttl_s: float = Field(default=600.0, gt=0, description="How long an answer may be reused.")
    max_entries: int = Field(default=512, ge=1, le=100_000, description="Least recent out.")


class StreamingConfig(Section):
    """Partial answers (QoS 0, sequence-numbered) while the model writes; see README."""

    terminals: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list,
        description="Terminal ids that always get partials (others ask with `stream: true`).",
    )
    max_backlog: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description=(
            "Partials a bus may hold unsent; past it the text is merged into the next partial "
            "instead of queued."
        ),
    )

    _terminal_list = field_validator("terminals", mode="before")(list_from_text)


class QueueConfig(Section):
    max_depth: int = Field(
        default=64,
        ge=1,
        le=100_000,
        description="Questions waiting; past this the asker gets busy.",
    )
    priority_burst: int = Field(
        default=2,
        ge=1,
        le=1_000,
        description="Most jobs served ahead of a waiting lower lane (critical > question).",
    )
    max_wait_s: float = Field(
        default=10.0,
        gt=0,
        description="A question is passed only by critical jobs that arrive within this time.",
    )


class DiagnosisConfig(Section):
    """Device events to retained diagnoses for SCADA (see README, "For SCADA integrators")."""

    enabled: bool = True
    event_topic: TopicTemplate = Field(
        default="edge/{site}/device/+/event",
        description="MQTT subscription for device events; the single `+` level is the device id.",
    )
    diagnosis_topic: TopicTemplate = Field(
        default="edge/{site}/diagnosis/{device_id}",
        description="Retained: the device's headline diagnosis (most severe active alarm).",
    )
    alarm_topic: TopicTemplate = Field(
        default="edge/{site}/diagnosis/{device_id}/{code}",
        description="Retained: the diagnosis of one alarm of the device (active or cleared).",
    )
    nats_event_subject: TopicTemplate = Field(
        default="edge.{site}.device.*.event",
        description="NATS subject for device events; the `*` token is the device id.",
    )
    nats_diagnosis_subject: TopicTemplate = "edge.{site}.diagnosis.{device_id}"
    nats_alarm_subject: TopicTemplate = "edge.{site}.diagnosis.{device_id}.{code}"
    coalesce_window_s: float = Field(
        default=2.0,
        ge=0.0,
        le=3_600.0,
        description="Identical alarms (device, code) within this window become one diagnosis.",
    )
    rate_per_minute: float = Field(
        default=12.0, gt=0, description="Diagnoses per device per minute (token bucket)."
    )
    rate_burst: int = Field(default=4, ge=1, description="Diagnoses a device may have at once.")
    rate_max_delay_s: float = Field(
        default=120.0, ge=0, description="A diagnosis postponed further than this is refused."
    )
    max_open_windows: int = Field(
        default=1_024, ge=1, le=1_000_000, description="Past this, new alarms are counted, dropped."
    )
    max_devices: int = Field(default=4_096, ge=1, le=1_000_000)
    max_alarms_per_device: int = Field(default=32, ge=1, le=1_024)
    cache_ttl_s: float = Field(
        default=600.0, ge=0, description="Reuse a diagnosis this long if the KB is unchanged."
    )
    cache_max_entries: int = Field(default=4_096, ge=1, le=1_000_000)
    max_tokens: int = Field(default=200, ge=16, le=4_096)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    similarity_threshold: float | None = Field(
        default=None, ge=-1.0, le=1.0, description="Unset: kb.similarity_threshold."
    )
    require_code_match: bool = Field(
        default=True, description="Only chunks that mention the alarm code count as knowledge."
    )
    fallback_summary: str = Field(
        default="The knowledge base has nothing on this alarm. Please contact technical support.",
        min_length=1,
        max_length=1_024,
    )
    fallback_action: str = Field(
        default="Contact technical support",
        min_length=1,
        max_length=48,
        pattern=r'^[^"\\\x00-\x1f]+$',
    )

    @model_validator(mode="after")
    def _one_device_wildcard(self) -> DiagnosisConfig:
        levels = self.event_topic.split("/")
        if levels.count("+") != 1 or "#" in levels:
            raise ValueError("event_topic must contain exactly one '+' level (the device id)")
        if self.nats_event_subject.split(".").count("*") != 1:
            raise ValueError("nats_event_subject must contain exactly one '*' token")
        for name in ("diagnosis_topic", "alarm_topic"):
            if "{device_id}" not in getattr(self, name):
                raise ValueError(f"{name} must contain {{device_id}}")
        if "{code}" not in self.alarm_topic:
            raise ValueError("alarm_topic must contain {code}")
        return self


class ShutdownConfig(Section):
    drain_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "On SIGTERM, how long the answer in progress may take to finish; past it the question "
            "stays in the journal and is answered after the restart. Keep below the unit's "
            "TimeoutStopSec."
        ),
    )


class MetricsConfig(Section):
    enabled: bool = Field(default=False, description="Serve Prometheus metrics over HTTP.")
    host: str = Field(
        default="127.0.0.1",
        description="Listen address; loopback by default (scrape through a proxy or SSH tunnel).",
    )
    port: Port = 9464


class LimitsConfig(Section):
    max_payload_bytes: int = Field(
        default=16_384, ge=256, le=1_048_576, description="Checked before any parsing."
    )
    max_json_depth: int = Field(default=8, ge=2, le=64)
    questions_per_minute: float = Field(
        default=0.0,
        ge=0,
        description="Per-terminal question rate (token bucket); past it the terminal gets "
        "`rate_limited`. 0: unlimited.",
    )
    question_burst: int = Field(
        default=5, ge=1, le=10_000, description="Questions a terminal may send at once."
    )
    max_terminals: int = Field(
        default=4_096,
        ge=1,
        le=1_000_000,
        description="Terminals whose rate is tracked (LRU); an evicted one starts with a full "
        "bucket.",
    )


class HealthConfig(Section):
    interval_s: float = Field(default=15.0, gt=0)


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console on a TTY, JSON lines otherwise."
    )


class Settings(BaseSettings):
    """The whole gateway configuration. See configs/gateway.toml for a commented copy."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    site: str = Field(default="plant1", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=64)
    instance: str = Field(
        default="gw1",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        max_length=64,
        description="Names this box on status/health topics and in its MQTT client id.",
    )
    data_dir: Path = Field(default=Path("/var/lib/edge-gateway"))
    cache_dir: Path = Field(default=Path("/var/cache/edge-gateway"))
    mqtt: MqttConfig = MqttConfig()
    nats: NatsConfig = NatsConfig()
    journal: JournalConfig = JournalConfig()
    kb: KnowledgeBaseConfig = KnowledgeBaseConfig()
    worker: WorkerConfig = WorkerConfig()
    queue: QueueConfig = QueueConfig()
    answer_cache: AnswerCacheConfig = AnswerCacheConfig()
    streaming: StreamingConfig = StreamingConfig()
    limits: LimitsConfig = LimitsConfig()
    diagnosis: DiagnosisConfig = DiagnosisConfig()
    health: HealthConfig = HealthConfig()
    log: LogConfig = LogConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    metrics: MetricsConfig = MetricsConfig()

    @model_validator(mode="after")
    def _jetstream_fits_the_queue(self) -> Settings:
        js = self.nats.jetstream
        jetstream = self.nats.enabled and self.nats.mode == "jetstream"
        if jetstream and js.max_ack_pending > self.queue.max_depth:
            raise ValueError(
                "nats.jetstream.max_ack_pending must not exceed queue.max_depth: the broker "
                "would hand over questions the gateway can only answer with busy"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _CONFIG_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    def path_in_data(self, path: Path) -> Path:
        return path if path.is_absolute() else self.data_dir / path

    @property
    def journal_path(self) -> Path:
        return self.path_in_data(self.journal.path)

    @property
    def kb_path(self) -> Path:
        return self.path_in_data(self.kb.path)

    @property
    def mqtt_client_id(self) -> str:
        return self.mqtt.client_id or f"edge-gateway-{self.instance}"

    @property
    def nats_name(self) -> str:
        return self.nats.name or f"edge-gateway-{self.instance}"

    def topic(self, template: str, **values: str) -> str:
        return template.format(site=self.site, instance=self.instance, **values)


_CONFIG_FILE: dict[str, Path | None] = {"path": None}


class ConfigFileError(Exception):
    """The configuration file named on the command line cannot be read."""


def load_settings(
    config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Build settings from a TOML file (given, or the default path if present), env and overrides.

    Raises pydantic.ValidationError with every error and its key path, or ConfigFileError.
    """
    path = config_file
    if path is None:
        path = next((p for p in DEFAULT_CONFIG_PATHS if p.exists()), None)
    elif not path.is_file():
        raise ConfigFileError(f"configuration file not found: {path}")
    _CONFIG_FILE["path"] = path
    try:
        return Settings(**(overrides or {}))
    finally:
        _CONFIG_FILE["path"] = None


def parse_override(assignment: str) -> dict[str, Any]:
    """Turn `mqtt.port=1884` into `{"mqtt": {"port": "1884"}}` (pydantic converts the value)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected KEY.PATH=VALUE, got {assignment!r}")
    result: dict[str, Any] = {}
    node = result
    parts = [p.strip() for p in key.split(".")]
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return result


def merge_overrides(assignments: list[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for assignment in assignments:
        _deep_merge(merged, parse_override(assignment))
    return merged


def _deep_merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value
