"""Answers a technician can trust: quotes are the manual's own lines, extractive answers run no
model, planted unsupported model text is caught and replaced, loops are stopped and never
published, the quote goes out before any model token. Real model worker, real demo knowledge
base; where model output must be a known bad text, the generation is planted (the embeddings,
the token counts and the search stay real)."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import apsw
import pytest
import pytest_asyncio

from gateway.bundled import default_generation_model
from gateway.config import Settings, WorkerConfig
from gateway.questions.answering import Answerer, AnswerPolicy
from gateway.questions.answers import QuestionContext
from gateway.rag.embedding_model import ensure_default_embedding_gguf
from gateway.rag.opening import open_knowledge_base
from gateway.rag.search import SearchHit
from gateway.rag.store import KnowledgeBase
from gateway.worker.replies import Generation
from gateway.worker.supervisor import WorkerSupervisor
from models.answer import Answer, AnswerMode
from tests.brokers import Mosquitto
from tests.conftest import SettingsFactory
from tests.harness import GatewayRunner, terminal

pytestmark = pytest.mark.slow

E203 = "What does alarm E203 on press P2 mean?"
FILTER = "What torque do I tighten the P2 pressure filter bowl to?"


def chunk_text(kb_path: Path, chunk_id: int) -> str:
    conn = apsw.Connection(str(kb_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        row = conn.execute("SELECT text FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
    finally:
        conn.close()
    assert row is not None, chunk_id
    return str(row[0])


def squash(text: str) -> str:
    return " ".join(text.split())


def assert_quotes_are_the_manuals_lines(answer: dict[str, Any], kb_path: Path) -> None:
    assert answer["sources"]
    quoted = [s for s in answer["sources"] if s["quote"]]
    assert quoted, answer["sources"]
    for source in quoted:
        assert source["quote"] in chunk_text(kb_path, source["chunk_id"])


async def test_extractive_answers_quote_the_manual_and_run_no_model(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    settings = make_settings(mosquitto, "answer.mode=extractive")
    async with GatewayRunner(settings) as gw, terminal(mosquitto.port, "t1") as t1:
        answers = []
        for text in (E203, FILTER):
            qid = await t1.ask(text)
            answers.append((await t1.wait_for(qid)).json)
        for answer in answers:
            assert answer["fallback"] is False
            assert answer["model"] == ""
            assert answer["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
            assert answer["grounded"] is True
            assert answer["check"]["mode"] == "extractive"
            assert_quotes_are_the_manuals_lines(answer, settings.kb_path)
            # Every quoted passage of the text is one of the sources' quotes, cited by number.
            parts = re.findall(r'"(.+?)" \[(\d+)\]', answer["text"], flags=re.S)
            assert parts, answer["text"]
            for body, number in parts:
                source = answer["sources"][int(number) - 1]
                assert squash(body.rstrip("…")) in squash(source["quote"])
        assert "40 Nm" in answers[1]["text"]
        assert gw.metrics.model_runs == 0
        assert gw.metrics.extractive == 2
        assert gw.metrics.checked == 0


async def test_checked_streaming_sends_the_quote_first_and_only_checked_text(
    mosquitto: Mosquitto, make_settings: SettingsFactory
) -> None:
    settings = make_settings(mosquitto, "answer.mode=checked", "streaming.terminals=t1")
    async with GatewayRunner(settings) as gw, terminal(mosquitto.port, "t1") as t1:
        qid = await t1.ask(E203)
        final = (await t1.wait_for(qid, topic=t1.answer_topic)).json
        pieces = [
            r.json
            for r in t1.replies
            if r.topic == t1.answer_topic + "/partial" and r.json["question_id"] == qid
        ]
        assert final["check"]["mode"] == "checked"
        assert final["grounded"] is True
        assert_quotes_are_the_manuals_lines(final, settings.kb_path)
        assert pieces, "no partial at all"
        first, *text = pieces
        assert first["seq"] == 0
        assert first["stage"] == "quote"
        assert first["source"] in final["sources"]
        assert [p["stage"] for p in text] == ["text"] * len(text)
        spelled = "".join(p["text"] for p in text).strip()
        if final["check"]["replaced"]:
            assert spelled == ""  # nothing generated passed: no model text went out
        else:
            assert spelled == final["text"]
        assert final["check"]["unsupported"] == [] or not any(
            u in final["text"] for u in final["check"]["unsupported"]
        )
        assert gw.metrics.checked == 1
        assert gw.metrics.replaced == int(final["check"]["replaced"])


class PlantedModel:
    """The real worker for embeddings and token counts; generation replaced by a planted text
    streamed in small pieces, as the worker would stream it. Records the order of events."""

    def __init__(self, worker: WorkerSupervisor, planted: str, events: list[str]) -> None:
        self._worker = worker
        self._planted = planted
        self.events = events

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self._worker.embed(texts)

    async def count_tokens(self, messages: Sequence[Mapping[str, str]]) -> int:
        return await self._worker.count_tokens(messages)

    async def generate(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        on_token: Callable[[str], None] | None = None,
        repeat_penalty: float = 1.0,
        stop_on_loop: bool = False,
    ) -> Generation:
        self.events.append("generate")
        for start in range(0, len(self._planted), 5):
            self.events.append("token")
            if on_token is not None:
                on_token(self._planted[start : start + 5])
        return Generation(
            text=self._planted,
            prompt_tokens=1,
            completion_tokens=len(self._planted) // 4,
            prompt_ms=1.0,
            generate_ms=1.0,
            model="planted",
        )


@pytest_asyncio.fixture
async def worker(model_cache: Path) -> AsyncIterator[WorkerSupervisor]:
    sup = WorkerSupervisor(
        WorkerConfig(request_timeout_s=120),
        generation_model=default_generation_model(),
        embedding_model=ensure_default_embedding_gguf(model_cache),
        instance="trusted",
    )
    await sup.start()
    try:
        yield sup
    finally:
        await sup.stop()


@pytest.fixture
def kb(tmp_path: Path, model_cache: Path, demo_kb_file: Path) -> KnowledgeBase:
    settings = Settings(data_dir=demo_kb_file.parent, cache_dir=model_cache)
    store, _ = open_knowledge_base(settings)
    return store


async def ask(
    worker: WorkerSupervisor,
    kb: KnowledgeBase,
    question: str,
    *,
    mode: AnswerMode,
    planted: str = "",
    events: list[str] | None = None,
    on_quote: Callable[[Any], None] | None = None,
    on_token: Callable[[str], None] | None = None,
) -> Answer:
    async def search(
        text: str, vector: Sequence[float], /, *, prefer: Sequence[int] = ()
    ) -> Sequence[SearchHit]:
        return kb.search(text, vector, top_k=4, prefer=prefer)

    model = PlantedModel(worker, planted, events if events is not None else [])
    answerer = Answerer(
        model,
        search,
        AnswerPolicy(
            similarity_threshold=0.3,
            fallback_text="not in the documentation",
            n_ctx=2048,
            max_tokens=96,
            temperature=0.0,
            mode=mode,
        ),
    )
    now = time.time()
    ctx = QuestionContext("q1", "t1", question, received_at=now, started_at=now)
    return await answerer.answer(ctx, on_quote=on_quote, on_token=on_token)


async def test_a_planted_unsupported_figure_is_caught_and_replaced_by_the_quotes(
    worker: WorkerSupervisor, kb: KnowledgeBase
) -> None:
    planted = "Tighten the filter bowl to 45 Nm [1]."
    checked = await ask(worker, kb, FILTER, mode="checked", planted=planted)
    extractive = await ask(worker, kb, FILTER, mode="extractive")
    assert checked.check is not None
    assert checked.check.unsupported == (planted,)
    assert checked.check.replaced
    assert "45" not in checked.text
    assert checked.text == extractive.text
    assert checked.grounded


async def test_a_planted_unsupported_sentence_is_caught_and_only_supported_text_stays(
    worker: WorkerSupervisor, kb: KnowledgeBase
) -> None:
    invented = "You can skip the step of replacing the pressure filter element."
    supported = "Screw the bowl back hand-tight plus a quarter turn, torque 40 Nm [1]."
    answer = await ask(worker, kb, FILTER, mode="checked", planted=f"{invented} {supported}")
    assert answer.check is not None
    assert answer.check.unsupported == (invented,)
    assert not answer.check.replaced
    assert answer.text == supported
    assert answer.grounded

    generative = await ask(worker, kb, FILTER, mode="generative", planted=invented)
    assert generative.check is not None
    assert generative.check.unsupported == (invented,)
    assert generative.text == invented  # published as written, but flagged
    assert not generative.grounded


async def test_a_looping_generation_is_stopped_and_the_repeats_never_published(
    worker: WorkerSupervisor, kb: KnowledgeBase
) -> None:
    sentence = "Check the pressure on gauge PG-1 after the reset. "
    emitted: list[str] = []
    answer = await ask(
        worker, kb, E203, mode="generative", planted=sentence * 12, on_token=emitted.append
    )
    assert answer.check is not None
    assert answer.check.stopped == "loop"
    assert answer.text == sentence.strip()
    assert "".join(emitted).strip() == answer.text


async def test_the_quote_is_handed_over_before_any_model_token(
    worker: WorkerSupervisor, kb: KnowledgeBase
) -> None:
    events: list[str] = []

    def quote(source: Any) -> None:
        events.append("quote")
        assert source.quote

    planted = "Alarm E203 means the system pressure stayed below 160 bar for more than 2 seconds."
    answer = await ask(
        worker, kb, E203, mode="checked", planted=planted, events=events, on_quote=quote
    )
    assert events[0] == "quote"
    assert events.count("quote") == 1
    assert events[1] == "generate"
    assert "token" in events
    assert answer.text == planted


async def test_the_worker_stops_a_real_loop_and_keeps_what_came_before(
    worker: WorkerSupervisor,
) -> None:
    """The bundled model, greedy, asked for something it can only do by repeating itself."""
    messages = [{"role": "user", "content": "Write the word filter 100 times."}]
    free = await worker.generate(messages, max_tokens=120, temperature=0.0)
    guarded = await worker.generate(messages, max_tokens=120, temperature=0.0, stop_on_loop=True)
    assert free.finish_reason == "length"
    assert guarded.finish_reason == "loop"
    assert guarded.completion_tokens < free.completion_tokens
    assert guarded.text
    assert free.text.startswith(guarded.text)
