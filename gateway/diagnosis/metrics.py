"""Counters of the diagnosis path, published in the health message."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from models.health import DiagnosisCounters


@dataclass
class DiagnosisMetrics:
    """Mutable counters, touched from the event loop only."""

    events_received: int = 0
    events_rejected: int = 0
    coalesced: int = 0
    rate_delayed: int = 0
    dropped_rate_limited: int = 0
    dropped_overflow: int = 0
    superseded: int = 0
    cleared: int = 0
    published: int = 0
    model_runs: int = 0
    fallback: int = 0
    cached: int = 0
    invalid_output: int = 0
    failed: int = 0
    not_owned: int = 0
    stale: int = 0
    preempted: int = 0

    def snapshot(self, *, open_windows: int) -> DiagnosisCounters:
        return DiagnosisCounters(**asdict(self), open_windows=open_windows)
