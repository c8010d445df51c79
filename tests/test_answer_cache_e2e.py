"""Issue 7: a repeated question is answered from the answer cache, without the model, until an
ingest changes the knowledge base."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import kb as kb_commands
from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.harness import GatewayRunner, terminal

pytestmark = pytest.mark.slow

E203 = "What does alarm E203 on press P2 mean?"
E205_LIKE = "What does alarm E205 on press P2 mean?"


async def test_repeat_is_cached_with_the_original_sources_until_an_ingest(
    mosquitto: Mosquitto, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(mosquitto, "worker.max_tokens=24", "answer_cache.enabled=true")
    async with GatewayRunner(settings) as gw, terminal(mosquitto.port, "t1") as t:
        assert gw.journal is not None
        first = (await t.wait_for(await t.ask(E203, qid="c-1"))).json
        assert first["cached"] is False
        assert first["fallback"] is False
        runs = gw.metrics.model_runs
        assert runs == 1

        again = (await t.wait_for(await t.ask(E203, qid="c-2"))).json
        assert again["cached"] is True
        assert again["question_id"] == "c-2"
        assert again["text"] == first["text"]
        assert again["sources"] == first["sources"]
        assert again["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
        assert gw.journal.model_runs("t1", "c-2") == 0
        assert gw.metrics.model_runs == runs
        assert gw.metrics.cached == 1

        # Nearly the same words, another alarm code: never the E203 answer.
        other = (await t.wait_for(await t.ask(E205_LIKE, qid="c-3"))).json
        assert other["cached"] is False

        # An ingest bumps the knowledge-base version: the next repeat runs the model again.
        doc = tmp_path / "canteen.md"
        doc.write_text("# Canteen\n\nThe canteen opens at 6:00 and closes at 14:30.\n")
        assert kb_commands.ingest(settings, [doc]) == 0  # `edge-gateway ingest`, beside it
        runs = gw.metrics.model_runs
        fresh = (await t.wait_for(await t.ask(E203, qid="c-4"))).json
        assert fresh["cached"] is False
        assert gw.journal.model_runs("t1", "c-4") == 1
        assert gw.metrics.model_runs == runs + 1
        assert gw.metrics.cached == 1
