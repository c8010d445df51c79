"""Validate the quality benchmark's question sets against their documents.

    python -m tests.bench.quality.check_sets

Checks both `questions.jsonl` (over `docs/`, reference documentation from Debian packages) and
`demo_questions.jsonl` (over `configs/demo-kb/`): every line is a JSON object with exactly the
fields id, question, expected_document and key_facts; ids are unique; an in-domain question
names an existing document and at least one of its key-fact variants occurs in that document's
text; no variant is given away by the question itself; an off-topic question has
`expected_document: null` and no key facts. Exits non-zero on any problem.

The helpers (`normalise`, `fact_present`, `document_text`, `load_questions`) are what a benchmark
scoring answers against these sets should use, so that "the fact is present" means the same
thing here and there.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

FIELDS = frozenset({"id", "question", "expected_document", "key_facts"})
DOCUMENT_SUFFIXES = frozenset({".md", ".txt", ".html", ".csv", ".pdf"})
# Like the gateway's ingest: a `.kbignore` in a document folder lists (glob patterns) the files
# that are not documents, e.g. docs/LICENSES.md or the demo KB's calibration questions.
IGNORE_FILE = ".kbignore"


@dataclass(frozen=True, slots=True)
class QuestionSet:
    name: str
    questions: Path
    docs: Path
    min_in_domain: int
    min_off_topic: int


SETS: tuple[QuestionSet, ...] = (
    QuestionSet("quality", HERE / "questions.jsonl", HERE / "docs", 45, 12),
    QuestionSet("demo", HERE / "demo_questions.jsonl", REPO / "configs" / "demo-kb", 25, 8),
)


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    question: str
    expected_document: str | None
    key_facts: tuple[str, ...]

    @property
    def off_topic(self) -> bool:
        return self.expected_document is None


def ignored_names(folder: Path) -> list[str]:
    """The patterns of the folder's `.kbignore` (comments and blank lines dropped)."""
    ignore = folder / IGNORE_FILE
    if not ignore.is_file():
        return []
    lines = ignore.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def benchmark_documents(qset: QuestionSet) -> list[Path]:
    """The files of a set's document folder that the gateway ingests as documents."""
    patterns = ignored_names(qset.docs)
    return sorted(
        p
        for p in qset.docs.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() in DOCUMENT_SUFFIXES
        and not any(fnmatch.fnmatch(p.name, pattern) for pattern in patterns)
    )


def normalise(text: str) -> str:
    """Case-folded, with every run of whitespace collapsed to one space."""
    return " ".join(text.casefold().split())


def fact_present(text: str, variants: tuple[str, ...] | list[str]) -> bool:
    """True when any acceptable variant of the key fact occurs in `text`."""
    haystack = normalise(text)
    return any(normalise(v) in haystack for v in variants if v.strip())


class _VisibleText(HTMLParser):
    """The text a browser would show: tags dropped, <script>/<style> contents skipped."""

    _HIDDEN = frozenset({"script", "style", "head", "title", "template"})
    _BREAKS = frozenset({"p", "div", "br", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "ul"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def document_text(path: Path) -> str:
    """The text a reader sees in a document (HTML without its markup)."""
    suffix = path.suffix.lower()
    if suffix in {".html", ".htm"}:
        parser = _VisibleText()
        parser.feed(path.read_text(encoding="utf-8"))
        parser.close()
        return "".join(parser.parts)
    if suffix in {".md", ".markdown", ".txt", ".text", ".csv"}:
        return path.read_text(encoding="utf-8")
    raise ValueError(f"{path.name}: no text extraction for {suffix!r} in this checker")


def load_questions(path: Path) -> tuple[list[Question], list[str]]:
    """Parse a JSONL question file; returns the questions and the format errors found."""
    questions: list[Question] = []
    errors: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"{where}: not JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            errors.append(f"{where}: not a JSON object")
            continue
        if set(obj) != FIELDS:
            missing = sorted(FIELDS - set(obj))
            extra = sorted(set(obj) - FIELDS)
            errors.append(f"{where}: fields wrong (missing {missing}, unexpected {extra})")
            continue
        qid, text = obj["id"], obj["question"]
        doc, facts = obj["expected_document"], obj["key_facts"]
        if not isinstance(qid, str) or not qid.strip():
            errors.append(f"{where}: id must be a non-empty string")
            continue
        if not isinstance(text, str) or not text.strip():
            errors.append(f"{where} ({qid}): question must be a non-empty string")
            continue
        if doc is not None and (not isinstance(doc, str) or not doc or "/" in doc):
            errors.append(f"{where} ({qid}): expected_document must be a basename or null")
            continue
        if not isinstance(facts, list) or not all(isinstance(f, str) and f.strip() for f in facts):
            errors.append(f"{where} ({qid}): key_facts must be a list of non-empty strings")
            continue
        questions.append(Question(qid, text, doc, tuple(facts)))
    return questions, errors


def check_set(qset: QuestionSet) -> tuple[list[str], Counter[str]]:
    """Validate one set; returns the errors and the number of questions per document."""
    questions, errors = load_questions(qset.questions)
    documents = set(benchmark_documents(qset))
    counts: Counter[str] = Counter()
    texts: dict[str, str] = {}
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            errors.append(f"{qset.name}: duplicate id {q.id}")
        seen.add(q.id)
        if q.off_topic:
            counts["(off-topic)"] += 1
            if q.key_facts:
                errors.append(f"{qset.name} {q.id}: off-topic question must have key_facts []")
            continue
        assert q.expected_document is not None
        counts[q.expected_document] += 1
        path = qset.docs / q.expected_document
        if path not in documents:
            errors.append(f"{qset.name} {q.id}: no document {q.expected_document} in {qset.docs}")
            continue
        if not q.key_facts:
            errors.append(f"{qset.name} {q.id}: in-domain question without key facts")
            continue
        if q.expected_document not in texts:
            texts[q.expected_document] = document_text(path)
        if not fact_present(texts[q.expected_document], q.key_facts):
            errors.append(
                f"{qset.name} {q.id}: no key-fact variant {list(q.key_facts)} occurs in "
                f"{q.expected_document}"
            )
        given_away = [v for v in q.key_facts if fact_present(q.question, [v])]
        if given_away:
            errors.append(f"{qset.name} {q.id}: the question contains its key fact {given_away}")
    in_domain = sum(n for doc, n in counts.items() if doc != "(off-topic)")
    if in_domain < qset.min_in_domain:
        errors.append(f"{qset.name}: {in_domain} in-domain questions, need {qset.min_in_domain}")
    if counts["(off-topic)"] < qset.min_off_topic:
        errors.append(
            f"{qset.name}: {counts['(off-topic)']} off-topic questions, need {qset.min_off_topic}"
        )
    return errors, counts


def main() -> int:
    failed = False
    for qset in SETS:
        errors, counts = check_set(qset)
        in_domain = sum(n for doc, n in counts.items() if doc != "(off-topic)")
        print(
            f"{qset.name}: {qset.questions.name}: {in_domain} in-domain, "
            f"{counts['(off-topic)']} off-topic, over {qset.docs.relative_to(REPO)}/"
        )
        for path in benchmark_documents(qset):
            size = path.stat().st_size
            print(f"  {counts[path.name]:3d}  {path.name} ({size / 1024:.0f} KiB)")
        print(f"  {counts['(off-topic)']:3d}  (off-topic)")
        unknown = set(counts) - {p.name for p in benchmark_documents(qset)} - {"(off-topic)"}
        for doc in sorted(unknown):
            print(f"  {counts[doc]:3d}  {doc} (not a benchmark document)")
        for error in errors:
            print(f"  ERROR {error}", file=sys.stderr)
        failed = failed or bool(errors)
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
