"""`make bench`, section "conversations": follow-up questions with and without their context.

tests/bench/quality/followups.jsonl holds 26 (first question, follow-up) pairs, 13 over the demo
knowledge base and 13 over the reference documents nobody on the team wrote. Each follow-up
names nothing itself ("what should I do about it?"). After the first question is answered, the
follow-up is answered in the default (extractive) mode by the daemon's own Answerer:

- alone: no history, what every gateway did before conversations;
- identifiers: the first question's identifiers join the query (no cited chunks);
- cited chunks: the chunks the first answer referred to are a ranking of their own in the
  fusion (no identifiers);
- both: what the gateway ships (gateway/questions/conversation.py);
- model rewrite: the bundled model rewrites the follow-up into a standalone question from the
  first turn, which is then answered alone (the alternative the issue asks to compare).

A follow-up scores when the answer's first source is the expected document, and when one of
its key facts is in the answer text. Latency is from the follow-up to its answer, in process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from gateway.config import Settings
from gateway.evaluation.cases import document_matches, fact_present
from gateway.questions.answering import Answerer, AnswerPolicy
from gateway.questions.answers import QuestionContext
from gateway.questions.conversation import Turn
from gateway.questions.turns import cited_chunks
from gateway.worker.supervisor import WorkerSupervisor
from models.answer import Answer
from tests.bench.quality import bench as quality

HERE = Path(__file__).resolve().parent
FOLLOW_UPS = HERE / "quality" / "followups.jsonl"
VARIANTS = ("alone", "identifiers", "cited chunks", "both (shipped)", "model rewrite")
REWRITE_PROMPT = (
    "Rewrite the technician's follow-up question so that it can be understood without the "
    "conversation: name the machine, alarm, program or part it refers to. Reply with the "
    "rewritten question only."
)


THIRD_TURN = "Anything else I should check?"


class RecordingModel:
    """The worker, with the prompt figures of its last generation kept for the report."""

    def __init__(self, worker: WorkerSupervisor) -> None:
        self._worker = worker
        self.last: tuple[int, int] | None = None  # (prompt tokens, of which evaluated)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self._worker.embed(texts)

    async def count_tokens(self, messages: Sequence[Mapping[str, str]]) -> int:
        return await self._worker.count_tokens(messages)

    async def generate(self, messages: Sequence[Mapping[str, str]], **kwargs: Any) -> Any:
        result = await self._worker.generate(messages, **kwargs)
        evaluated = result.prompt_eval_tokens or result.prompt_tokens
        self.last = (result.prompt_tokens, evaluated)
        return result


@dataclass(frozen=True)
class FollowUp:
    id: str
    set: str
    first: str
    follow_up: str
    expected_document: str
    key_facts: tuple[str, ...]


@dataclass
class Score:
    document: int = 0
    fact: int = 0
    latencies_ms: list[float] = field(default_factory=list)


def load() -> list[FollowUp]:
    rows = [json.loads(line) for line in FOLLOW_UPS.read_text().splitlines() if line.strip()]
    return [FollowUp(**{**r, "key_facts": tuple(r["key_facts"])}) for r in rows]


def context(text: str, history: tuple[Turn, ...] = ()) -> QuestionContext:
    now = time.time()
    return QuestionContext(
        question_id="bench", terminal_id="bench", text=text, received_at=now, started_at=now,
        history=history,
    )  # fmt: skip


def variant_history(variant: str, case: FollowUp, first: Answer) -> tuple[Turn, ...]:
    full = Turn("first", case.first, first.text, cited_chunks(first), time.time())
    if variant == "identifiers":
        return (Turn(full.question_id, full.question, full.answer, (), full.at),)
    if variant == "cited chunks":
        return (Turn(full.question_id, "", full.answer, full.cited, full.at),)
    if variant == "both (shipped)":
        return (full,)
    return ()


async def rewrite(worker: WorkerSupervisor, case: FollowUp, first: Answer) -> str:
    messages = [
        {"role": "system", "content": REWRITE_PROMPT},
        {
            "role": "user",
            "content": f"Earlier question: {case.first}\nEarlier answer: {first.text[:400]}\n"
            f"Follow-up question: {case.follow_up}",
        },
    ]
    result = await worker.generate(messages, max_tokens=48, temperature=0.0)
    text = result.text.strip().splitlines()[0].strip() if result.text.strip() else ""
    return text or case.follow_up


async def run_set(settings: Settings, cases: list[FollowUp]) -> dict[str, object]:
    scores = {v: Score() for v in VARIANTS}
    first_ms: list[float] = []
    rewrites: list[tuple[str, str]] = []
    prompts: list[tuple[int, int]] = []
    async with quality.worker_and_kb(settings, "bench-conversations") as (worker, kb):
        policy = AnswerPolicy.from_settings(settings)
        answerer = Answerer(worker, kb.search, policy)
        recording = RecordingModel(worker)
        checked = Answerer(recording, kb.search, dataclasses.replace(policy, mode="checked"))
        for case in cases:
            started = time.perf_counter()
            first = await answerer.answer(context(case.first))
            first_ms.append((time.perf_counter() - started) * 1000)
            for variant in VARIANTS:
                started = time.perf_counter()
                if variant == "model rewrite":
                    standalone = await rewrite(worker, case, first)
                    rewrites.append((case.follow_up, standalone))
                    answer = await answerer.answer(context(standalone))
                else:
                    history = variant_history(variant, case, first)
                    answer = await answerer.answer(context(case.follow_up, history))
                score = scores[variant]
                score.latencies_ms.append((time.perf_counter() - started) * 1000)
                top = answer.sources[0].document if answer.sources else ""
                score.document += document_matches(top, case.expected_document)
                score.fact += fact_present(answer.text, case.key_facts)
            # Prefix reuse across turns (checked mode, where the model reads the prompt): turn
            # 3's prompt begins with turn 1 and 2, as turn 2's began with turn 1.
            turns: list[Turn] = []
            for text in (case.first, case.follow_up, THIRD_TURN):
                answer = await checked.answer(context(text, tuple(turns)))
                turns.append(Turn(text, text, answer.text, cited_chunks(answer), time.time()))
            if recording.last is not None:
                prompts.append(recording.last)
    return {
        "n": len(cases),
        "scores": scores,
        "first_ms": first_ms,
        "rewrites": rewrites,
        "prompts": prompts,
    }


def run(tmp: Path, cache: Path) -> dict[str, dict[str, object]]:
    cases = load()
    out: dict[str, dict[str, object]] = {}
    for name, (docs, _questions) in quality.SETS.items():
        settings = Settings(data_dir=tmp / f"conv-{name}", cache_dir=cache)
        quality.ingest(settings, docs)
        out[name] = asyncio.run(run_set(settings, [c for c in cases if c.set == name]))
    return out


def report_lines(result: dict[str, dict[str, object]]) -> list[str]:
    lines = [
        "## Conversations: follow-up questions with and without their context",
        "",
        "tests/bench/quality/followups.jsonl: a first question, then a follow-up that names "
        "nothing itself; answered in the default (extractive) mode by the daemon's Answerer "
        "(tests/bench/conversations.py says what each row does). Counts are follow-ups whose "
        "answer's first source is the expected document / whose text holds a key fact.",
        "",
    ]
    for name, data in result.items():
        n = data["n"]
        scores: dict[str, Score] = data["scores"]  # type: ignore[assignment]
        first_ms: list[float] = data["first_ms"]  # type: ignore[assignment]
        prompts: list[tuple[int, int]] = data["prompts"]  # type: ignore[assignment]
        lines += [
            f"### {name} ({n} follow-ups)",
            "",
            "| follow-up answered | expected document first | key fact in text | p50 ms |",
            "|---|---|---|---|",
        ]
        for variant, s in scores.items():
            lines.append(
                f"| {variant} | {s.document}/{n} | {s.fact}/{n} | {median(s.latencies_ms):.0f} |"
            )
        lines += [
            "",
            f"First questions p50: {median(first_ms):.0f} ms; a follow-up with its context "
            f"(both) / a first question: "
            f"{median(scores['both (shipped)'].latencies_ms) / median(first_ms):.2f}.",
            "",
            f"Prefix reuse, checked mode, the third turn of each conversation (a second "
            f'follow-up, "{THIRD_TURN}"): prompt tokens p50 '
            f"{median(p for p, _ in prompts) if prompts else 0:.0f}, evaluated p50 "
            f"{median(e for _, e in prompts) if prompts else 0:.0f} (the rest is the earlier "
            f"turns' prefix, reused from the KV cache).",
            "",
            "Model rewrites (follow-up -> standalone question), the first three:",
            "",
        ]
        rewrites: list[tuple[str, str]] = data["rewrites"]  # type: ignore[assignment]
        lines += [f"- {a} -> {b}" for a, b in rewrites[:3]]
        lines.append("")
    return lines
