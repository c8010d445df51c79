"""Which release runs: `edge-gateway --version`, `version` in the status and health messages, and
`edge_gateway_build_info{version}` on the Prometheus endpoint, all pyproject.toml's `version`
(read from the installed package's metadata). A gateway that is built but not started is enough
for the status message and the endpoint; the running gateway is checked in
tests/test_metrics_endpoint.py."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.app import Gateway
from gateway.config import MetricsConfig, Settings
from gateway.ops.health import HealthReporter, LoopLagMonitor
from gateway.ops.prometheus import MetricsServer
from gateway.questions.metrics import Metrics
from gateway.version import package_version
from models.health import GatewayState, Health, Status, WorkerHealth
from tests.brokers import REPO, free_port

PYPROJECT_VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_the_package_version_is_pyprojects() -> None:
    assert package_version() == PYPROJECT_VERSION


def test_edge_gateway_version_prints_it() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--version"],
        capture_output=True, text=True, check=False, cwd=REPO,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (0, f"edge-gateway {PYPROJECT_VERSION}\n")


def test_the_status_message_carries_it() -> None:
    gateway = Gateway(Settings(instance="gw1"))
    for state in (GatewayState.ONLINE, GatewayState.OFFLINE):
        status = json.loads(gateway._status(state))
        assert status["version"] == PYPROJECT_VERSION
        assert Status.model_validate_json(json.dumps(status)).version == PYPROJECT_VERSION


async def test_the_health_message_carries_it(tmp_path: Path) -> None:
    reporter = HealthReporter(
        instance="gw1",
        data_dir=tmp_path,
        metrics=Metrics(),
        queue_depth=lambda: 0,
        queue_capacity=64,
        worker=lambda: WorkerHealth(
            state="ready",
            pid=None,
            rss_bytes=None,
            confinement="none",
            memory_limit_bytes=None,
            restarts=0,
            oom_kills=0,
            model="m",
        ),
        buses=dict,
        kb_chunks=lambda: 0,
        state=lambda: GatewayState.ONLINE,
        lag=LoopLagMonitor(),
    )
    health = json.loads((await reporter.snapshot()).model_dump_json())
    assert health["version"] == PYPROJECT_VERSION


def test_messages_without_it_stay_valid() -> None:
    """Older gateways do not send it: optional, defaulting to null (docs/contract.md, policy a)."""
    old = {"schema_version": 1, "instance": "gw1", "state": "online"}
    assert Status.model_validate_json(json.dumps(old)).version is None
    frozen = REPO / "tests" / "contract" / "v1" / "health-1.json"
    assert "version" not in json.loads(frozen.read_text())
    assert Health.model_validate_json(frozen.read_text()).version is None


def test_prometheus_exposes_build_info() -> None:
    port = free_port()
    gateway = Gateway(Settings(instance="gw1"))
    server = MetricsServer.start(MetricsConfig(enabled=True, port=port), gateway)
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    finally:
        server.close()
    assert f'edge_gateway_build_info{{version="{PYPROJECT_VERSION}"}} 1.0' in text
    samples = [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "edge_gateway_build_info"
    ]
    assert samples == [({"version": PYPROJECT_VERSION}, 1.0)]
