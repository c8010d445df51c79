"""Check every sentence of an answer against the excerpts it was written from.

Two questions per sentence, cheapest and most damaging first:
1. Are its hard facts in the excerpts? Every identifier (`terms.identifiers`: figures with units,
   alarm codes, part numbers, paths, option names) must be stated by some excerpt, else the
   sentence is unsupported with reason "identifier". This is the model's typical lie ("torque
   to 45 Nm" where the manual says 40 Nm) and it is checked on every sentence, however short.
2. Is what it says in the excerpts? Support is the best, over excerpt windows (one sentence, or
   two adjacent sentences of one excerpt), of the fraction of the sentence's content words the
   window contains (stemmed, so paraphrases that reuse the manual's words pass). Word overlap
   is blind to polarity, so a window only counts if it agrees with the sentence's: it contains
   every negation the sentence makes ("not", "never", "skip", "without", ...; "You can skip
   replacing the return filter" shares nearly all its words with "Replace the return filter"),
   and a sentence without "not" is not mainly made of words the window negates ("Look for
   leaks with your hand" against "never look for leaks with your hand"). Sentences with fewer
   than MIN_JUDGED_WORDS content words ("See [1].", "Yes.") are not judged here.

Optional similarities (the caller's embeddings, one best cosine per answer sentence, aligned
with `answer_sentences(answer)`) rescue paraphrases with new words: a cosine is mapped linearly
from [SIMILARITY_FLOOR, SIMILARITY_CEILING] onto [0, 1] (clipped) and support is the larger of
the two. Embeddings hardly see negation, so the mapped similarity only counts when the
sentence's negations occur in some excerpt window, and never overrides the identifier check.

Citation markers ("[1]", "[1, 2]"), references ("Excerpt 2", "(source 1)") and an attribution
prefix ("According to press-p2-manual.md (3.3 Filter element): ...") name a source: they claim
nothing about the plant, so they are blanked out before judging.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.grounding.sentences import Sentence, split_sentences
from gateway.grounding.terms import content_words, fact_index, missing_identifiers

DEFAULT_SUPPORT_THRESHOLD = 0.6
"""Minimum support of a judged sentence; a first guess, to be calibrated on the bench."""
MIN_JUDGED_WORDS = 3
SIMILARITY_FLOOR = 0.5
"""A cosine at or below this is no support (unrelated sentences score 0.0-0.4 with MiniLM)."""
SIMILARITY_CEILING = 0.9
"""A cosine at or above this is full support. With the defaults, a sentence passes on
similarity alone from a cosine of 0.74 (0.5 + 0.6 * 0.4): a close paraphrase."""

_CITATION = re.compile(r"\[\s*\d+(?:\s*[,;\u2013-]\s*\d+)*\s*\]")
_REFERENCE = re.compile(
    r"\(?\b(?:excerpts?|sources?|chunks?|documents?|passages?)\s+#?\d+"
    r"(?:\s*(?:,|and|&|or)\s*#?\d+)*\)?",
    re.IGNORECASE,
)
_QUOTED_ATTRIBUTION = re.compile(
    r"\baccording to\s+[^:\n\"\u201c]{1,200}:\s*(?=[\"\u201c])", re.IGNORECASE
)
_ATTRIBUTION = re.compile(
    r"\b(?:according to|as (?:stated|described|explained|written) in)\s+"
    r"(?:[^:,\n\"\u201c.!?]|[.!?](?!\s)){1,80}[:,]",
    re.IGNORECASE,
)
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-*+\u2022]|\(?\d{1,3}[.)]|\(?[a-z]\))(?=[ \t])", re.M)
_NUMBER_ABBREVIATION = re.compile(r"\bno\.(?=\s*\d)", re.IGNORECASE)
_CLAUSE = re.compile(r"[^,;:.!?()\n]+")
_NOT_WORD = re.compile(
    r"\b(?:not|no|never|nothing|none|nor|neither|cannot|dont|doesnt|cant|wont|\w+n't)\b"
)
_NEGATION_WORD = re.compile(r"[a-z]+(?:['\u2019]t)?")
_NEGATIONS = {
    **dict.fromkeys(
        (
            "not", "no", "never", "nothing", "none", "nor", "neither", "cannot", "don't",
            "doesn't", "didn't", "isn't", "aren't", "wasn't", "weren't", "can't", "won't",
            "shouldn't", "mustn't", "needn't", "dont", "doesnt", "cant", "wont", "shouldnt",
        ),
        "not",
    ),
    **dict.fromkeys(
        (
            "skip", "skips", "skipped", "skipping", "omit", "omits", "omitted", "omitting",
            "ignore", "ignores", "ignored", "ignoring", "bypass", "bypassed", "bypassing",
            "unnecessary", "optional",
        ),
        "skip",
    ),
    "without": "without",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A sentence of the answer the excerpts do not back, and why.

    `detail` lists the missing identifiers (reason "identifier") or gives the best support score
    (reason "unsupported"), plus the negation when that is what no excerpt states."""

    sentence: str
    reason: Literal["identifier", "unsupported"]
    detail: str


@dataclass(frozen=True, slots=True)
class CheckResult:
    """`grounded` iff nothing is unsupported; `sentences` counts all answer sentences, judged
    or not."""

    grounded: bool
    unsupported: tuple[Unsupported, ...]
    sentences: int


@dataclass(frozen=True, slots=True)
class _Window:
    words: frozenset[str]
    negations: frozenset[str]
    negated: frozenset[str]  # content words in the scope of a "not" (to the clause's end)


def answer_sentences(answer: str) -> list[Sentence]:
    """The sentences `check_answer` judges, with offsets into `answer` (citations, references and
    attributions excluded). Embed exactly these `.text` for `check_answer`'s `similarities`."""
    masked = _mask(answer)
    return [Sentence(s.start, s.end, answer[s.start : s.end]) for s in split_sentences(masked)]


def check_answer(
    answer: str,
    excerpts: Sequence[str],
    *,
    support_threshold: float = DEFAULT_SUPPORT_THRESHOLD,
    similarities: Sequence[float] | None = None,
) -> CheckResult:
    """Judge every sentence of `answer` against `excerpts` (see the module docstring).

    `similarities`, when given, holds one cosine per `answer_sentences(answer)` item: the best
    cosine between that sentence and any excerpt sentence. An empty answer is grounded.
    """
    masked = _mask(answer)
    units = split_sentences(masked)
    if similarities is not None and len(similarities) != len(units):
        raise ValueError(
            f"{len(similarities)} similarities for {len(units)} answer sentences: "
            "compute them for answer_sentences(answer)"
        )
    facts = fact_index(excerpts)
    windows = _windows(excerpts)
    stated_negations = frozenset().union(*(w.negations for w in windows))
    unsupported: list[Unsupported] = []
    for position, unit in enumerate(units):
        original = answer[unit.start : unit.end]
        missing = missing_identifiers(_LIST_MARKER.sub(_blank, unit.text), facts)
        if missing:
            unsupported.append(Unsupported(original, "identifier", ", ".join(missing)))
            continue
        words = frozenset(content_words(unit.text))
        if len(words) < MIN_JUDGED_WORDS:
            continue
        negations = _negations(unit.text)
        lexical = _support(words, negations, windows)
        support = lexical
        if similarities is not None and negations <= stated_negations:
            support = max(support, _map_similarity(similarities[position]))
        if support >= support_threshold:
            continue
        detail = f"support {support:.2f}{_polarity_note(words, negations, windows)}"
        unsupported.append(Unsupported(original, "unsupported", detail))
    return CheckResult(not unsupported, tuple(unsupported), len(units))


def _mask(answer: str) -> str:
    """`answer` with citations, references and attributions blanked (offsets kept)."""
    for pattern in (_CITATION, _REFERENCE, _QUOTED_ATTRIBUTION, _ATTRIBUTION):
        answer = pattern.sub(_blank, answer)
    return answer


def _blank(match: re.Match[str]) -> str:
    return re.sub(r"[^\n]", " ", match.group())


def _windows(excerpts: Sequence[str]) -> list[_Window]:
    windows: list[_Window] = []
    for excerpt in excerpts:
        units = split_sentences(excerpt)
        for index, unit in enumerate(units):
            windows.append(_window(unit.text))
            if index + 1 < len(units):
                windows.append(_window(excerpt[unit.start : units[index + 1].end]))
    return windows


def _window(text: str) -> _Window:
    return _Window(frozenset(content_words(text)), _negations(text), _negated_words(text))


def _negations(text: str) -> frozenset[str]:
    """The kinds of negation `text` makes: "not" (not, no, never, don't...), "skip" (skip, omit,
    ignore, optional...) and "without". "No. 5" is a number, not a negation."""
    text = _NUMBER_ABBREVIATION.sub("number", text.lower()).replace("\u2019", "'")
    return frozenset(
        kind
        for word in _NEGATION_WORD.findall(text)
        if (kind := _NEGATIONS.get(word, "not" if word.endswith("n't") else "")) != ""
    )


def _negated_words(text: str) -> frozenset[str]:
    """Content words after a "not"-kind negation up to the end of its clause: in "never look for
    leaks with your hand, use cardboard" that is look, leak, hand."""
    text = _NUMBER_ABBREVIATION.sub("number", text.lower()).replace("\u2019", "'")
    words: set[str] = set()
    for clause in _CLAUSE.findall(text):
        negation = _NOT_WORD.search(clause)
        if negation:
            words.update(content_words(clause[negation.end() :]))
    return frozenset(words)


def _agrees(words: frozenset[str], negations: frozenset[str], window: _Window) -> bool:
    """Whether `window` can back a sentence of this polarity: it states every negation the
    sentence makes, and a sentence without "not" is not mainly a restatement of what the window
    negates: "Look for leaks with your hand" against "never look for leaks with your hand, use
    a piece of cardboard" is (all its words are in the negated clause), "Use a piece of
    cardboard to look for leaks" is not (as many words outside it as inside)."""
    if not negations <= window.negations:
        return False
    if "not" in negations or not window.negated:
        return True
    inside = len(words & window.negated)
    outside = len(words & (window.words - window.negated))
    return inside < 2 or inside <= outside


def _support(words: frozenset[str], negations: frozenset[str], windows: list[_Window]) -> float:
    """Best fraction of `words` in one window that agrees with the sentence's polarity."""
    best = 0.0
    for window in windows:
        if _agrees(words, negations, window):
            best = max(best, len(words & window.words) / len(words))
    return best


def _polarity_note(words: frozenset[str], negations: frozenset[str], windows: list[_Window]) -> str:
    """Why the window sharing most words did not count, when polarity was the reason."""
    if not windows:
        return ""
    best = max(windows, key=lambda window: len(words & window.words))
    if _agrees(words, negations, best):
        return ""
    absent = sorted(negations - best.negations)
    if absent:
        return f"; the excerpts do not say {', '.join(absent)}"
    return "; the excerpts negate it"


def _map_similarity(similarity: float) -> float:
    scaled = (float(similarity) - SIMILARITY_FLOOR) / (SIMILARITY_CEILING - SIMILARITY_FLOOR)
    return min(1.0, max(0.0, scaled))
