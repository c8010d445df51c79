"""Fault-suite fixtures: question texts, the figures log, and counts scaled for CI.

`FAULTS_SCALE` (default 1.0) multiplies every count, so a developer can try a test at a tenth of
its size (`FAULTS_SCALE=0.1`); the figures in docs/reliability.md are from the default.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config import Settings
from tests.faults.ledger import Figures

REPO = Path(__file__).resolve().parents[2]
DEMO_KB = REPO / "configs" / "demo-kb"
FIGURES_LOG = Path(os.environ.get("FAULTS_FIGURES", REPO / "var" / "faults-figures.txt"))

OFF_TOPIC = [
    "What is the best recipe for chocolate cake?",
    "Who won the football world cup in 1998?",
    "How tall is the Eiffel tower?",
    "Recommend a good novel for the holidays.",
    "What is the capital of Australia?",
]


def scaled(n: int, minimum: int = 1) -> int:
    return max(minimum, round(n * float(os.environ.get("FAULTS_SCALE", "1"))))


def in_domain(n: int | None = None) -> list[str]:
    lines = (DEMO_KB / "calibration-questions.txt").read_text().splitlines()
    found = [line for line in lines if line.strip() and not line.startswith("#")]
    return found[:n] if n is not None else found


def mixed_texts(n: int, *, every: int) -> list[str]:
    """`n` question texts: one in `every` in-domain (the model runs), the rest off-topic (the
    knowledge base has nothing: a fallback, no model run). Keeps 1,000-question tests within
    CI's budget on 2 cores while every test still exercises the model."""
    domain, off = in_domain(), OFF_TOPIC
    return [
        domain[(i // every) % len(domain)] if i % every == 0 else off[i % len(off)]
        for i in range(n)
    ]


def record(figures: Figures | str) -> None:
    """Print the figures and append them to the figures log docs/reliability.md is written from."""
    line = figures if isinstance(figures, str) else figures.line()
    print(line)
    FIGURES_LOG.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES_LOG.open("a") as fh:
        fh.write(line + "\n")


@pytest.fixture(autouse=True)
def _faults_marker(request: pytest.FixtureRequest) -> None:
    request.node.add_marker(pytest.mark.slow)


def write_gateway_config(directory: Path, settings: Settings, body: str) -> Path:
    """`directory`/gw.toml for a daemon under test (`tests.daemon.Daemon`), on the data and
    cache directories of `settings` (from `make_settings`); `body` adds sections."""
    path = directory / "gw.toml"
    cache = "enabled = true" if settings.answer_cache.enabled else "enabled = false"
    path.write_text(
        f'data_dir = "{settings.data_dir}"\ncache_dir = "{settings.cache_dir}"\n{body}\n'
        f'[answer_cache]\n{cache}\n[answer]\nmode = "{settings.answer.mode}"\n'
    )
    return path
