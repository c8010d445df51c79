"""The optional Prometheus endpoint: a custom collector over the gateway's live objects.

Why a collector and not prometheus-client's own Counter/Histogram objects: the health message
already reads `Metrics`, the supervisor and the adapters; reading the same objects at scrape
time means the two can never drift apart, and the answering path stays free of a second set of
bookkeeping. Scrapes run on prometheus-client's HTTP thread and only read ints, floats and
small files (cgroup, /proc); nothing here touches the databases or awaits the loop.

Off by default; bound to loopback by default when on (`[metrics]`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from threading import Thread
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.config import MetricsConfig
from gateway.logging import get_logger
from gateway.questions.metrics import Histogram
from gateway.version import package_version
from models.health import GatewayState

if TYPE_CHECKING:
    from gateway.ops.view import GatewayView

log = get_logger(__name__)

PREFIX = "edge_gateway"
OUTCOMES = (
    "answered",
    "cached",
    "fallback",
    "failed",
    "busy",
    "rate_limited",
    "expired",
    "duplicate",
    "rejected",
)


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], h: Histogram) -> None:
    buckets = h.cumulative()
    # Read without a lock while the loop may be observing: never let +Inf undercount a bucket.
    top = max(count for _, count in buckets)
    buckets[-1] = ("+Inf", top)
    family.add_metric(labels, buckets, h.total)


class GatewayCollector(Collector):
    def __init__(self, gateway: GatewayView) -> None:
        self._gw = gateway

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        gw = self._gw
        m = gw.metrics
        build = GaugeMetricFamily(
            f"{PREFIX}_build_info",
            "Always 1; the label says which release runs (edge-gateway --version)",
            labels=["version"],
        )
        build.add_metric([package_version()], 1.0)
        yield build
        state = gw.state()
        family = GaugeMetricFamily(
            f"{PREFIX}_state", "1 for the gateway's current state", labels=["state"]
        )
        for value in GatewayState:
            family.add_metric([value.value], 1.0 if value == state else 0.0)
        yield family
        yield CounterMetricFamily(
            f"{PREFIX}_questions_received", "Question messages received", value=m.received
        )
        answers = CounterMetricFamily(
            f"{PREFIX}_answers",
            "Questions by outcome (as in the health message)",
            labels=["outcome"],
        )
        counters = m.counters()
        for outcome in OUTCOMES:
            answers.add_metric([outcome], getattr(counters, outcome))
        yield answers
        grounding = CounterMetricFamily(
            f"{PREFIX}_answer_checks",
            "Fresh answers by how their text was made and checked: extractive (quotes, no "
            "model), checked (generated, went through the check), unsupported (the check found "
            "unsupported sentences), replaced (nothing generated passed: quotes sent), "
            "loop_stopped (the model repeated itself and was stopped)",
            labels=["result"],
        )
        for result, count in (
            ("extractive", m.extractive),
            ("checked", m.checked),
            ("unsupported", m.unsupported),
            ("replaced", m.replaced),
            ("loop_stopped", m.loops_stopped),
        ):
            grounding.add_metric([result], count)
        yield grounding
        yield CounterMetricFamily(f"{PREFIX}_model_runs", "Generation calls", value=m.model_runs)
        stages = _histogram("stage_latency_seconds", "Answer latency per stage", ["stage"])
        for stage, hist in m.stage_seconds.items():
            _add_histogram(stages, [stage], hist)
        yield stages
        tps = m.mean_tokens_per_s()
        yield GaugeMetricFamily(
            f"{PREFIX}_tokens_per_second",
            "Mean generation rate of the last answers (prompt processing included)",
            value=tps if tps is not None else float("nan"),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_generated_tokens", "Completion tokens generated", value=m.tokens_generated
        )
        yield CounterMetricFamily(
            f"{PREFIX}_generate_seconds", "Time spent generating", value=m.generate_seconds
        )
        service = gw.service
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            "Questions waiting",
            value=service.queue_depth if service is not None else 0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_capacity", "Queue bound", value=gw.settings.queue.max_depth
        )
        yield from self._worker()
        connected = GaugeMetricFamily(
            f"{PREFIX}_bus_connected", "1 when connected to the bus", labels=["bus"]
        )
        reconnects = CounterMetricFamily(
            f"{PREFIX}_bus_reconnects", "Reconnections to the bus", labels=["bus"]
        )
        for name, adapter in list(gw.adapters.items()):
            health = adapter.health()
            connected.add_metric([name], 1.0 if health.connected else 0.0)
            reconnects.add_metric([name], health.reconnects)
        yield connected
        yield reconnects
        lag = gw.loop_lag
        yield GaugeMetricFamily(
            f"{PREFIX}_event_loop_lag_last_seconds",
            "Latest event-loop wake-up delay",
            value=lag.last_lag_ms / 1000,
        )
        lag_family = _histogram("event_loop_lag_seconds", "Event-loop wake-up delays", [])
        _add_histogram(lag_family, [], lag.histogram)
        yield lag_family
        kb = gw.kb
        yield GaugeMetricFamily(
            f"{PREFIX}_kb_chunks", "Chunks in the knowledge base", value=kb.chunks if kb else 0
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_kb_size_bytes",
            "Knowledge-base file plus WAL",
            value=kb.size_bytes() if kb else 0,
        )

    def _worker(self) -> Iterator[Metric]:
        worker = self._gw.worker
        if worker is None:
            return
        health = worker.health()
        up = GaugeMetricFamily(
            f"{PREFIX}_worker_up",
            "1 when the model worker is ready",
            labels=["confinement"],
        )
        up.add_metric([health.confinement], 1.0 if health.state == "ready" else 0.0)
        yield up
        yield CounterMetricFamily(
            f"{PREFIX}_worker_restarts", "Model worker restarts", value=health.restarts
        )
        yield CounterMetricFamily(
            f"{PREFIX}_worker_oom_kills", "Model worker OOM kills", value=health.oom_kills
        )
        if health.rss_bytes is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_worker_rss_bytes", "Worker resident memory", value=health.rss_bytes
            )
        if health.memory_limit_bytes is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_worker_memory_limit_bytes",
                "Worker memory limit as read back from the kernel",
                value=health.memory_limit_bytes,
            )


class MetricsServer:
    """prometheus-client's HTTP server on its own daemon thread; `close` stops it."""

    def __init__(self, server: WSGIServer, thread: Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    @classmethod
    def start(cls, cfg: MetricsConfig, gateway: GatewayView) -> MetricsServer:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(GatewayCollector(gateway))
        ProcessCollector(registry=registry)  # process_* figures of the gateway itself
        server, thread = start_http_server(cfg.port, addr=cfg.host, registry=registry)
        log.info("metrics.listening", host=cfg.host, port=int(server.server_port))
        return cls(server, thread)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
