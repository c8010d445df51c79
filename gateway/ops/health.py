"""The health message: system and process figures from psutil plus the gateway's own counters."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import psutil

from gateway.questions.metrics import LAG_BUCKETS_S, Histogram, Metrics
from gateway.version import package_version
from models.health import (
    BusHealth,
    DiagnosisCounters,
    GatewayState,
    Health,
    ProcessHealth,
    SystemHealth,
    WorkerHealth,
)


class LoopLagMonitor:
    """Measures how late the event loop wakes up: a stalled loop is a sick gateway."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.last_lag_ms = 0.0
        self.max_lag_ms = 0.0
        self.histogram = Histogram(LAG_BUCKETS_S)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, (loop.time() - start - self.interval_s) * 1000)
            self.last_lag_ms = lag
            self.max_lag_ms = max(self.max_lag_ms, lag)
            self.histogram.observe(lag / 1000)

    def take_max(self) -> float:
        """The worst lag since the previous health message."""
        worst, self.max_lag_ms = self.max_lag_ms, self.last_lag_ms
        return worst


def _temperature() -> float | None:
    reader = getattr(psutil, "sensors_temperatures", None)
    if reader is None:
        return None
    try:
        sensors = reader()
    except (OSError, RuntimeError):
        return None
    readings = [t.current for entries in sensors.values() for t in entries if t.current]
    return max(readings) if readings else None


def system_health(data_dir: Path) -> SystemHealth:
    memory = psutil.virtual_memory()
    probe = data_dir if data_dir.exists() else Path("/")
    return SystemHealth(
        cpu_percent=min(100.0, psutil.cpu_percent(interval=None)),
        memory_percent=memory.percent,
        memory_available_bytes=memory.available,
        disk_percent=psutil.disk_usage(str(probe)).percent,
        temperature_c=_temperature(),
        load_1m=os.getloadavg()[0],
    )


def process_health(process: psutil.Process) -> ProcessHealth:
    with process.oneshot():
        return ProcessHealth(
            pid=process.pid,
            rss_bytes=process.memory_info().rss,
            cpu_percent=process.cpu_percent(interval=None),
            open_fds=process.num_fds(),
        )


class HealthReporter:
    """Assembles a Health message from the live parts of the gateway."""

    def __init__(
        self,
        *,
        instance: str,
        data_dir: Path,
        metrics: Metrics,
        queue_depth: Callable[[], int],
        queue_capacity: int,
        worker: Callable[[], WorkerHealth],
        buses: Callable[[], Mapping[str, BusHealth]],
        kb_chunks: Callable[[], int],
        state: Callable[[], GatewayState],
        lag: LoopLagMonitor,
        diagnosis: Callable[[], DiagnosisCounters] | None = None,
    ) -> None:
        self._instance = instance
        self._data_dir = data_dir
        self._metrics = metrics
        self._queue_depth = queue_depth
        self._queue_capacity = queue_capacity
        self._worker = worker
        self._buses = buses
        self._kb_chunks = kb_chunks
        self._state = state
        self._lag = lag
        self._diagnosis = diagnosis
        self._process = psutil.Process()
        self._started = time.monotonic()

    async def snapshot(self) -> Health:
        system, process = await asyncio.to_thread(
            lambda: (system_health(self._data_dir), process_health(self._process))
        )
        return Health(
            instance=self._instance,
            state=self._state(),
            uptime_s=time.monotonic() - self._started,
            system=system,
            process=process,
            worker=self._worker(),
            queue_depth=self._queue_depth(),
            queue_capacity=self._queue_capacity,
            counters=self._metrics.counters(),
            diagnosis=self._diagnosis() if self._diagnosis else DiagnosisCounters(),
            latency=self._metrics.latency(),
            tokens_per_s=self._metrics.mean_tokens_per_s(),
            event_loop_lag_ms=self._lag.take_max(),
            buses=dict(self._buses()),
            kb_chunks=self._kb_chunks(),
            generated_at=datetime.now(UTC),
            version=package_version(),
        )
