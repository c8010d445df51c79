"""The Prometheus endpoint scraped over real HTTP and parsed by prometheus-client's parser."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.version import package_version
from tests.brokers import Mosquitto, free_port
from tests.conftest import SettingsFactory
from tests.harness import GatewayRunner, terminal

pytestmark = pytest.mark.slow


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def answers(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], outcome: str) -> float:
    return samples[("edge_gateway_answers_total", (("outcome", outcome),))]


async def test_counters_move_with_traffic_and_match_the_health_message(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    port = free_port()
    settings = make_settings(mosquitto, "metrics.enabled=true", f"metrics.port={port}")
    assert settings.metrics.host == "127.0.0.1"
    async with GatewayRunner(settings) as gateway, terminal(mosquitto.port, "t1") as term:
        before = await asyncio.to_thread(scrape, port)
        assert answers(before, "answered") == 0
        assert before[("edge_gateway_bus_connected", (("bus", "mqtt"),))] == 1
        assert before[("edge_gateway_state", (("state", "online"),))] == 1
        assert before[("edge_gateway_kb_chunks", ())] > 0
        assert before[("edge_gateway_kb_size_bytes", ())] > 0
        assert before[("edge_gateway_build_info", (("version", package_version()),))] == 1
        qid = await term.ask("What does alarm E203 on press P2 mean?")
        assert (await term.wait_for(qid, 120)).json["kind"] == "answer"
        qid = await term.ask("Who won the football world cup in 1998?")
        assert (await term.wait_for(qid, 120)).json["fallback"] is True
        after = await asyncio.to_thread(scrape, port)
        assert answers(after, "answered") == 1
        assert answers(after, "fallback") == 1
        assert after[("edge_gateway_questions_received_total", ())] == 2
        total = ("edge_gateway_stage_latency_seconds_count", (("stage", "total"),))
        generate = ("edge_gateway_stage_latency_seconds_count", (("stage", "generate"),))
        assert after[total] == 2
        assert after[generate] == 1  # the fallback never reached the model
        assert after[("edge_gateway_generated_tokens_total", ())] > 0
        assert after[("edge_gateway_tokens_per_second", ())] > 0
        assert after[("edge_gateway_event_loop_lag_seconds_count", ())] > 0
        assert after[("edge_gateway_queue_depth", ())] == 0
        assert after[("edge_gateway_worker_restarts_total", ())] == 0
        assert ("edge_gateway_worker_oom_kills_total", ()) in after
        # The retained health message reports the same figures.
        async with terminal(
            mosquitto.port, "health", subscribe=("edge/plant1/gateway/gw1/health",)
        ) as watcher:
            # The retained one may predate the traffic; the next ones (every 0.5 s) do not.
            replies = await watcher.wait_count(3, 10)
            health = json.loads(replies[-1].payload)
        async with terminal(
            mosquitto.port, "status", subscribe=("edge/plant1/gateway/gw1/status",)
        ) as status_watcher:
            status = json.loads((await status_watcher.wait_count(1, 10))[-1].payload)
        assert health["version"] == status["version"] == package_version()
        assert health["counters"]["answered"] == answers(after, "answered")
        assert health["counters"]["fallback"] == answers(after, "fallback")
        assert health["kb_chunks"] == after[("edge_gateway_kb_chunks", ())]
        assert health["worker"]["restarts"] == after[("edge_gateway_worker_restarts_total", ())]
        assert health["tokens_per_s"] == pytest.approx(
            after[("edge_gateway_tokens_per_second", ())]
        )
        assert gateway.metrics.answered == 1


async def test_metrics_are_off_by_default(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    settings = make_settings(mosquitto)
    assert settings.metrics.enabled is False
    async with GatewayRunner(settings) as gateway:
        assert gateway.metrics is not None
        with pytest.raises(OSError):
            await asyncio.to_thread(scrape, settings.metrics.port)
