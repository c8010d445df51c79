"""The retained health and status messages an operator's dashboard reads."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt

from models.base import SCHEMA_VERSION, Identifier, ShortText, WireModel

Percent = Annotated[float, Field(ge=0.0, le=100.0)]
VERSION_DESCRIPTION = (
    "The gateway's release (`edge-gateway --version`). Absent or null from gateways released "
    "before it was added."
)


class GatewayState(StrEnum):
    """`degraded`: the worker's restart budget is spent; questions get fallbacks or errors."""

    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class Status(WireModel):
    """Retained on the status topic; the broker publishes the offline form as our Last Will."""

    schema_version: Literal[1] = SCHEMA_VERSION
    instance: Identifier
    state: GatewayState
    since: datetime | None = None
    version: ShortText | None = Field(default=None, description=VERSION_DESCRIPTION)


class SystemHealth(WireModel):
    cpu_percent: Percent
    memory_percent: Percent
    memory_available_bytes: NonNegativeInt
    disk_percent: Percent = Field(description="Use of the filesystem holding the data directory.")
    temperature_c: float | None = Field(default=None, description="Null where the board has none.")
    load_1m: NonNegativeFloat


class ProcessHealth(WireModel):
    pid: NonNegativeInt
    rss_bytes: NonNegativeInt
    cpu_percent: NonNegativeFloat
    open_fds: NonNegativeInt


class WorkerHealth(WireModel):
    state: ShortText = Field(description="starting, ready, restarting, failed or stopped.")
    pid: NonNegativeInt | None
    rss_bytes: NonNegativeInt | None
    confinement: ShortText = Field(description="cgroup-v2, cgroup-v1, rlimit or none.")
    memory_limit_bytes: NonNegativeInt | None
    restarts: NonNegativeInt
    oom_kills: NonNegativeInt
    model: ShortText


class Counters(WireModel):
    received: NonNegativeInt = 0
    answered: NonNegativeInt = 0
    cached: NonNegativeInt = Field(
        default=0, description="Answered from the answer cache, without the model."
    )
    fallback: NonNegativeInt = 0
    failed: NonNegativeInt = 0
    busy: NonNegativeInt = 0
    expired: NonNegativeInt = 0
    duplicate: NonNegativeInt = 0
    rejected: NonNegativeInt = 0
    rate_limited: NonNegativeInt = Field(
        default=0, description="Questions refused by the per-terminal rate limit."
    )
    journal_write_failures: NonNegativeInt = Field(
        default=0,
        description="Journal writes that failed (e.g. disk full); the questions stay "
        "unacknowledged and are retried.",
    )
    extractive: NonNegativeInt = Field(
        default=0, description="Answers built from the manual's quotes, without the model."
    )
    checked: NonNegativeInt = Field(
        default=0, description="Generated answers that went through the grounding check."
    )
    unsupported: NonNegativeInt = Field(
        default=0, description="Generated answers in which the check found unsupported sentences."
    )
    replaced: NonNegativeInt = Field(
        default=0,
        description="Checked answers replaced by the extractive answer (nothing generated passed).",
    )
    loops_stopped: NonNegativeInt = Field(
        default=0, description="Generations stopped because the model repeated itself."
    )


class DiagnosisCounters(WireModel):
    """Device events and diagnoses. No event is dropped without being counted here."""

    events_received: NonNegativeInt = 0
    events_rejected: NonNegativeInt = Field(default=0, description="Invalid payload or topic.")
    coalesced: NonNegativeInt = Field(
        default=0, description="Repeats folded into an open window (reported as repeat_count)."
    )
    rate_delayed: NonNegativeInt = Field(
        default=0, description="Diagnoses postponed by the per-device rate limit."
    )
    dropped_rate_limited: NonNegativeInt = Field(
        default=0, description="Alarms refused: the device's rate-limit backlog was too long."
    )
    dropped_overflow: NonNegativeInt = Field(
        default=0, description="Alarms refused: max_open_windows windows were already open."
    )
    superseded: NonNegativeInt = Field(
        default=0, description="Windows closed by a clear before their diagnosis was published."
    )
    cleared: NonNegativeInt = 0
    published: NonNegativeInt = 0
    model_runs: NonNegativeInt = 0
    fallback: NonNegativeInt = 0
    cached: NonNegativeInt = 0
    invalid_output: NonNegativeInt = Field(
        default=0, description="Model output that failed validation (a fallback was sent)."
    )
    failed: NonNegativeInt = Field(default=0, description="Worker errors and publish failures.")
    not_owned: NonNegativeInt = Field(
        default=0,
        description=(
            "Events of devices another live instance owns (each device's events are handled "
            "by one instance; every instance receives them)."
        ),
    )
    stale: NonNegativeInt = Field(
        default=0,
        description=(
            "Events older than the alarm's state on the board (kept by the broker while this "
            "instance was down, handled meanwhile by another): ignored."
        ),
    )
    preempted: NonNegativeInt = Field(
        default=0,
        description="Routine diagnoses stopped between two tokens for a question (then rerun).",
    )
    open_windows: NonNegativeInt = 0


class LatencySummary(WireModel):
    p50_ms: NonNegativeFloat | None
    p95_ms: NonNegativeFloat | None
    samples: NonNegativeInt


class BusHealth(WireModel):
    """One bus connection. An outage shows as `reconnects` (and, on NATS, `disconnects`)."""

    connected: bool
    reconnects: NonNegativeInt
    disconnects: NonNegativeInt = 0
    slow_consumers: NonNegativeInt = Field(
        default=0, description="NATS: messages dropped because we did not read fast enough."
    )
    dead_letters: NonNegativeInt = Field(
        default=0, description="JetStream: questions given up after MaxDeliver deliveries."
    )
    last_error: ShortText | None = None


class Health(WireModel):
    """Published retained every `health.interval_s` seconds."""

    schema_version: Literal[1] = SCHEMA_VERSION
    instance: Identifier
    state: GatewayState
    uptime_s: NonNegativeFloat
    system: SystemHealth
    process: ProcessHealth
    worker: WorkerHealth
    queue_depth: NonNegativeInt
    queue_capacity: NonNegativeInt
    counters: Counters
    diagnosis: DiagnosisCounters = DiagnosisCounters()
    latency: LatencySummary
    tokens_per_s: NonNegativeFloat | None
    event_loop_lag_ms: NonNegativeFloat
    buses: dict[Identifier, BusHealth]
    kb_chunks: NonNegativeInt
    generated_at: datetime
    version: ShortText | None = Field(default=None, description=VERSION_DESCRIPTION)
