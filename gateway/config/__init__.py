"""Configuration as data: one pydantic-settings model, read from TOML, environment and CLI.

This room owns the configuration: one module per group of sections (bus.py: [mqtt], [nats];
answering.py: [journal], [kb], [worker], [answer_cache], [streaming], [queue]; diagnosis.py;
operations.py: [shutdown], [metrics], [limits], [health], [log]) and settings.py, the root model
with its loading and `--set` overrides. It imports only pydantic and the standard library, so
every other room may import it. Precedence, highest first: `--set key.path=value` flags,
`EDGE_GATEWAY_*` environment variables (nested keys joined with `__`), the TOML file, defaults.
"""

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
from gateway.config.base import (
    DEFAULT_CONFIG_PATHS,
    ENV_PREFIX,
    Section,
    list_from_text,
    read_secret_file,
)
from gateway.config.bus import JetStreamConfig, MqttConfig, NatsConfig, TlsConfig
from gateway.config.diagnosis import DiagnosisConfig
from gateway.config.operations import (
    HealthConfig,
    LimitsConfig,
    LogConfig,
    MetricsConfig,
    ShutdownConfig,
)
from gateway.config.settings import (
    ConfigFileError,
    Settings,
    load_settings,
    merge_overrides,
    parse_override,
)

__all__ = [
    "DEFAULT_CONFIG_PATHS",
    "ENV_PREFIX",
    "AnswerCacheConfig",
    "AnswerConfig",
    "ConfigFileError",
    "ConversationConfig",
    "DiagnosisConfig",
    "HealthConfig",
    "JetStreamConfig",
    "JournalConfig",
    "KnowledgeBaseConfig",
    "LimitsConfig",
    "LogConfig",
    "MetricsConfig",
    "MqttConfig",
    "NatsConfig",
    "QueueConfig",
    "Section",
    "Settings",
    "ShutdownConfig",
    "StreamingConfig",
    "TlsConfig",
    "WorkerConfig",
    "list_from_text",
    "load_settings",
    "merge_overrides",
    "parse_override",
    "read_secret_file",
]
