"""Shared fixtures: real mosquitto per test, real models and a demo knowledge base per session."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings, merge_overrides
from tests.brokers import Mosquitto, NatsServer

REPO = Path(__file__).resolve().parent.parent
DEMO_KB = REPO / "configs" / "demo-kb"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir holding the bundled embedding model converted to GGUF (once per session)."""
    from gateway.rag.embedding_model import ensure_default_embedding_gguf

    cache = tmp_path_factory.mktemp("cache")
    ensure_default_embedding_gguf(cache)
    return cache


@pytest.fixture(scope="session")
def demo_kb_file(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """The shipped demo knowledge base, ingested once per session (tests copy it)."""
    from gateway.rag.embedder import LlamaEmbedder
    from gateway.rag.ingest import ingest_paths
    from gateway.rag.opening import open_knowledge_base

    data = tmp_path_factory.mktemp("kb")
    settings = Settings(data_dir=data, cache_dir=model_cache)
    kb, embedding_model = open_knowledge_base(settings)
    with LlamaEmbedder(embedding_model, n_threads=1) as embedder:
        report = ingest_paths(
            kb,
            embedder,
            [DEMO_KB],
            chunk_chars=settings.kb.chunk_chars,
            overlap=settings.kb.chunk_overlap_chars,
            progress=False,
        )
    kb.close()
    assert report.ok, report.failed
    return settings.kb_path


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats")
    server.start()
    yield server
    server.stop()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path, model_cache: Path, demo_kb_file: Path) -> SettingsFactory:
    """Settings for a gateway on this test's broker, with its own copy of the demo KB."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    if not (data / "kb.sqlite3").exists():
        shutil.copy(demo_kb_file, data / "kb.sqlite3")

    def build(broker: Mosquitto | None, *overrides: str, **fields: Any) -> Settings:
        """Settings on `broker` (None: MQTT disabled, e.g. a NATS-only gateway)."""
        values: dict[str, Any] = {
            "data_dir": data,
            "cache_dir": model_cache,
            "mqtt": {"port": broker.port} if broker is not None else {"enabled": False},
            "worker": {"request_timeout_s": 120, "max_tokens": 48, "restart_backoff_s": 0.1},
            "health": {"interval_s": 0.5},
            # Most tests count model runs per question and repeat the same texts; the answer
            # cache would answer those from memory. Its own tests turn it on.
            "answer_cache": {"enabled": False},
            # The delivery tests count model runs per question: they run the path that uses
            # the model (checked). Tests of the default (extractive) path set it themselves.
            "answer": {"mode": "checked"},
        }
        for key, value in merge_overrides(list(overrides)).items():
            if isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        values.update(fields)
        return Settings(**values)

    return build
