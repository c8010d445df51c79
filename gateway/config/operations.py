"""The operating sections: [shutdown], [metrics], [limits], [health], [log]."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.config.base import Port, Section


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
