"""Question sets: one JSON object a line, written by the plant from its own documents.

    {"id": "q01", "question": "...", "expected_document": "press-p2-manual.md",
     "key_facts": ["210 bar", "210bar"]}

`expected_document` is the file name (or path suffix) of the document that answers the
question, or null for a question the knowledge base must not answer (it must fall back).
`key_facts` lists acceptable variants of the one fact the answer has to carry: it counts as
present when any variant occurs, compared case-insensitively with whitespace collapsed. A bad
line is refused with its line number, never skipped: a set that silently lost questions would
report a better score than the plant earned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class EvalCase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=128)]
    question: Annotated[str, Field(min_length=1, max_length=4096)]
    expected_document: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    key_facts: tuple[Annotated[str, Field(min_length=1, max_length=512)], ...] = ()

    @property
    def in_domain(self) -> bool:
        return self.expected_document is not None


class CaseFileError(ValueError):
    """A question set that cannot be used as it is; the message names the file and line."""


def load_cases(path: Path) -> list[EvalCase]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseFileError(f"{path}: cannot read: {exc}") from exc
    cases: list[EvalCase] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            raw = json.loads(line)
            if isinstance(raw, dict) and "id" not in raw:
                raw = {**raw, "id": f"line-{number}"}
            case = EvalCase.model_validate(raw)
        except (ValueError, ValidationError) as exc:
            raise CaseFileError(f"{path}:{number}: {exc}") from exc
        if case.id in seen:
            raise CaseFileError(f"{path}:{number}: id {case.id!r} appears twice")
        seen.add(case.id)
        cases.append(case)
    if not cases:
        raise CaseFileError(f"{path}: no questions")
    return cases


def normalise(text: str) -> str:
    """Case-folded, every run of whitespace collapsed to one space."""
    return " ".join(text.casefold().split())


def fact_present(text: str, variants: Sequence[str]) -> bool:
    """True when any acceptable variant of the key fact occurs in `text`."""
    haystack = normalise(text)
    return any(normalise(v) in haystack for v in variants if v.strip())


def document_matches(document: str, expected: str) -> bool:
    """A source's document path names the expected document (by file name or path suffix)."""
    doc = document.replace("\\", "/").rstrip("/")
    want = expected.replace("\\", "/").strip("/")
    return doc == want or doc.endswith("/" + want)
