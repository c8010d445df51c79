"""Configuration as data: one pydantic-settings model, read from TOML, environment and CLI.

Precedence, highest first: `--set key.path=value` flags, `EDGE_GATEWAY_*` environment variables
(nested keys joined with `__`, e.g. `EDGE_GATEWAY_MQTT__PORT=1884`), the TOML file, defaults.
Secrets are `SecretStr`, so every dump masks them; a `*_file` twin reads them from a file, and a
bare file name is looked up in systemd's `$CREDENTIALS_DIRECTORY` first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway.config.answering import (
    AnswerCacheConfig,
    AnswerConfig,
    ConversationConfig,
    JournalConfig,
    KnowledgeBaseConfig,
    QueueConfig,
    StreamingConfig,
    WorkerConfig,
)
from gateway.config.base import DEFAULT_CONFIG_PATHS, ENV_PREFIX
from gateway.config.bus import MqttConfig, NatsConfig
from gateway.config.diagnosis import DiagnosisConfig
from gateway.config.operations import (
    HealthConfig,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    ShutdownConfig,
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
    answer: AnswerConfig = AnswerConfig()
    conversation: ConversationConfig = ConversationConfig()
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
