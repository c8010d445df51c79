"""The accounting every fault test ends with, per question id (issue 6):

- answered once, answered more than once on the wire (every copy must be byte-identical to
  the reply stored in the journal), or missing;
- how many times the model ran for it (the journal's `model_runs`, counted before each run, so
  a run interrupted by a crash counts too).

`Figures` prints as one line the table of docs/reliability.md quotes.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.bus import Received


@dataclass
class Figures:
    name: str
    expected: int
    answered_once: int = 0
    duplicated: int = 0
    missing: list[str] = field(default_factory=list)
    not_identical: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    model_runs: Counter[int] = field(default_factory=Counter)
    extra: dict[str, object] = field(default_factory=dict)

    def line(self) -> str:
        runs = ", ".join(f"{n} run(s): {c}" for n, c in sorted(self.model_runs.items()))
        more = "".join(f"; {k}: {v}" for k, v in self.extra.items())
        return (
            f"FIGURES {self.name}: {self.expected} questions; answered once "
            f"{self.answered_once}, more than once {self.duplicated} (all byte-identical: "
            f"{not self.not_identical}), missing {len(self.missing)}; replies {dict(self.kinds)}"
            f"{'; codes ' + str(dict(self.codes)) if self.codes else ''}; model {runs}{more}"
        )


def stored_replies(journal: Path) -> dict[tuple[str, str], tuple[bytes | None, int]]:
    """(terminal, question id) -> (stored reply payload, model runs), read-only."""
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT terminal_id, question_id, reply, model_runs FROM questions"
        ).fetchall()
    finally:
        db.close()
    return {(t, q): (bytes(r) if r is not None else None, int(n)) for t, q, r, n in rows}


def terminal_of(topic: str) -> str | None:
    """The terminal id in `edge/{site}/terminal/{id}/answer[/...]` (MQTT) or
    `edge.{site}.answer.{id}[. ...]` (NATS)."""
    levels = topic.split("/")
    if len(levels) >= 5 and levels[2] == "terminal" and levels[4] == "answer":
        return levels[3]
    tokens = topic.split(".")
    if len(tokens) >= 4 and tokens[2] == "answer":
        return tokens[3]
    return None


def account(
    name: str,
    expected: Iterable[tuple[str, str]],
    replies: Sequence[Received],
    journals: Sequence[Path],
    *,
    stored: Mapping[tuple[str, str], tuple[bytes | None, int]] | None = None,
) -> Figures:
    """Account `expected` (terminal, question id) pairs against what arrived on the wire."""
    want = list(expected)
    figures = Figures(name=name, expected=len(want))
    if stored is None:
        merged: dict[tuple[str, str], tuple[bytes | None, int]] = {}
        for path in journals:
            merged.update(stored_replies(path))
        stored = merged
    wire: dict[tuple[str, str], list[bytes]] = {}
    for item in replies:
        body = item.json()
        terminal = terminal_of(item.topic)
        if body is None or terminal is None or not isinstance(body.get("question_id"), str):
            continue
        wire.setdefault((terminal, body["question_id"]), []).append(item.payload)
    for key in want:
        copies = wire.get(key, [])
        saved, runs = stored.get(key, (None, 0))
        figures.model_runs[runs] += 1
        if not copies:
            figures.missing.append(f"{key[0]}/{key[1]}")
            continue
        if len(copies) == 1:
            figures.answered_once += 1
        else:
            figures.duplicated += 1
            if saved is None or any(c != saved for c in copies):
                figures.not_identical.append(f"{key[0]}/{key[1]}")
        body = json.loads(copies[-1])
        figures.kinds[str(body.get("kind"))] += 1
        if body.get("kind") == "error":
            figures.codes[str(body.get("code"))] += 1
    return figures


def runs_by_outcome(journal: Path) -> dict[str, set[int]]:
    """The distinct model-run counts of answers that used the model and of fallbacks."""
    out: dict[str, set[int]] = {"model": set(), "fallback": set()}
    for payload, runs in stored_replies(journal).values():
        body = json.loads(payload) if payload is not None else {}
        if body.get("kind") == "answer":
            out["fallback" if body["fallback"] else "model"].add(runs)
    return out


def answers_by_runs(journal: Path) -> Counter[tuple[str, int]]:
    """How many stored answers used the model ("model") or were fallbacks ("fallback"), by
    their model-run count: `runs_by_outcome` with counts, so a test can say how many."""
    out: Counter[tuple[str, int]] = Counter()
    for payload, runs in stored_replies(journal).values():
        body = json.loads(payload) if payload is not None else {}
        if body.get("kind") == "answer":
            out["fallback" if body["fallback"] else "model", runs] += 1
    return out
