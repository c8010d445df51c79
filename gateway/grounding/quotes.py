"""Pick the manual's own sentence that answers a question: an exact substring of the chunk.

Why quote at all: a retrieved chunk is ~1 000 characters and a technician on a phone reads the
first line. The sentence that carries the answer, verbatim, is both the most useful thing to show
and the one thing the tiny model cannot get wrong. `Quote.text == chunk_text[start:end]` always,
even when a long sentence has to be cut (at a word boundary, inside it).

Ranking mixes three signals, because each alone fails on manuals:
- embedding similarity (the caller's, optional) finds paraphrases ("won't build pressure" for
  "hydraulic pressure low") but blurs codes;
- keyword overlap, weighted by rarity within the chunk, finds the sentence using the question's
  own words;
- identifiers of the question (E203, HF-2231-B, an option name; less so a machine id like P2)
  found in a sentence are the strongest evidence there is, so they get a large additive boost.
A heading is scored like any sentence and then halved: it names a topic but states nothing, so it
ranks below a real sentence containing the same words.

The similarity contract: `select_quote`'s `similarities` align one to one with
`quote_candidates(chunk_text)` (not with `split_sentences`): embed exactly those sentences'
`.text`, in that order, and pass the cosines to the question.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.grounding.sentences import (
    Sentence,
    is_heading,
    is_list_item,
    is_table_row,
    is_table_rule,
    split_sentences,
)
from gateway.grounding.terms import content_words, fact_index, identifiers, supports

WEIGHT_SIMILARITY = 0.5
"""Share of the embedding cosine (clipped at 0) in a score, when similarities are given."""
WEIGHT_KEYWORDS = 0.5
"""Share of the rarity-weighted fraction of question words in the sentence (1.0 without
similarities, so scores stay on the same 0..1 scale either way)."""
WEIGHT_IDENTIFIERS = 0.75
"""Added for the (weighted) share of the question's identifiers the sentence states: one
matching alarm code outweighs most shared vocabulary. Each identifier is weighted by its rarity
among the sentences, like a word; a short one (P2, R1, V3: a machine or device named all over
its manual) by SHORT_IDENTIFIER_FACTOR as well. The share is of max(1, total weight), so a
question naming only "R1" gives at most half the boost."""
SHORT_IDENTIFIER_CHARS = 3
SHORT_IDENTIFIER_FACTOR = 0.5
HEADING_FACTOR = 0.5
MIN_CANDIDATE_WORDS = 2
"""A candidate has at least this many content words ("Daily", "E203.", a table rule are not
quotes), unless it ends with ':' and so introduces the list that follows ("Causes:")."""
SHORT_QUOTE_CHARS = 160
"""A quote shorter than this takes the next sentence of its paragraph along, when it fits:
reference pages state a setting in one sentence and its condition or value in the next
(measured on the quality bench: 100 -> 160 characters, key fact in the quotes 0.81 -> 0.86)."""
SHORT_STEP_CHARS = 100
"""The same for a numbered step taking the next step: a step is an instruction of its own."""
MAX_EXTRA_UNITS = 3
"""At most this many units follow the best sentence (the rest of a step, the next steps)."""


@dataclass(frozen=True, slots=True)
class Quote:
    """An exact span of a chunk: `text == chunk_text[start:end]`; `score` is its rank score."""

    text: str
    start: int
    end: int
    score: float


def quote_candidates(chunk_text: str) -> list[Sentence]:
    """The units of a chunk worth quoting, in order: headings, table header rows and fragments
    dropped (see MIN_CANDIDATE_WORDS). Embed exactly these for `select_quote`."""
    return _candidates(split_sentences(chunk_text))


def rank_sentences(
    question: str,
    sentences: Sequence[Sentence],
    similarities: Sequence[float] | None = None,
) -> list[tuple[Sentence, float]]:
    """`sentences` with their scores, best first; ties keep the original order.

    `similarities`, when given, holds one cosine per sentence (same order) between the sentence
    and the question, as the caller's embedding model computed it.
    """
    if similarities is not None and len(similarities) != len(sentences):
        raise ValueError(
            f"{len(similarities)} similarities for {len(sentences)} sentences: they must align"
        )
    count = len(sentences)
    question_words = set(content_words(question))
    words = [set(content_words(s.text)) for s in sentences]
    word_weight = _rarity({w: sum(w in ws for ws in words) for w in question_words}, count)
    total = sum(word_weight.values())
    hits = _identifier_hits(identifiers(question), sentences)
    id_weight = {
        i: weight * (SHORT_IDENTIFIER_FACTOR if len(i) <= SHORT_IDENTIFIER_CHARS else 1.0)
        for i, weight in _rarity({i: len(found) for i, found in hits.items()}, count).items()
    }
    id_total = max(1.0, sum(id_weight.values()))
    keyword_share = WEIGHT_KEYWORDS if similarities is not None else 1.0
    scored: list[tuple[float, int, Sentence]] = []
    for position, sentence in enumerate(sentences):
        overlap = sum(word_weight[w] for w in question_words & words[position])
        score = keyword_share * (overlap / total if total else 0.0)
        found = sum(weight for i, weight in id_weight.items() if position in hits[i])
        score += WEIGHT_IDENTIFIERS * found / id_total
        if similarities is not None:
            score += WEIGHT_SIMILARITY * max(0.0, float(similarities[position]))
        if is_heading(sentence):
            score *= HEADING_FACTOR
        scored.append((score, position, sentence))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [(sentence, score) for score, _, sentence in scored]


def _rarity(frequency: Mapping[str, int], count: int) -> dict[str, float]:
    """IDF-like weight of terms found in `frequency[term]` of `count` sentences: 1.0 for a term
    in at most one sentence, down to about 0.4 for a term in every one of many sentences."""
    top = math.log(1.0 + (count + 1) / 1.5)
    return {
        term: min(1.0, math.log(1.0 + (count + 1) / (found + 0.5)) / top)
        for term, found in frequency.items()
    }


def _identifier_hits(wanted: set[str], sentences: Sequence[Sentence]) -> dict[str, set[int]]:
    """For each identifier of the question, the positions of the sentences stating it."""
    hits: dict[str, set[int]] = {i: set() for i in wanted}
    if not wanted:
        return hits
    for position, sentence in enumerate(sentences):
        index = fact_index([sentence.text])
        for identifier in wanted:
            if supports(index, identifier):
                hits[identifier].add(position)
    return hits


def select_quote(
    question: str,
    chunk_text: str,
    similarities: Sequence[float] | None = None,
    *,
    max_chars: int = 400,
) -> Quote | None:
    """The best quote of `chunk_text` for `question`, at most `max_chars` long.

    `similarities`, when given, align with `quote_candidates(chunk_text)`. The best sentence is
    extended with the units that continue it (the rest of its step, the list after a line ending
    in ':', or the next sentence or step when the quote is still short)
    while the whole stays within `max_chars`; a best sentence longer than that is cut at a word
    boundary. None when the chunk has nothing to quote (blank, or only headings and fragments).
    """
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    units = split_sentences(chunk_text)
    candidates = _candidates(units)
    if similarities is not None and len(similarities) != len(candidates):
        raise ValueError(
            f"{len(similarities)} similarities for {len(candidates)} quote candidates: "
            "compute them for quote_candidates(chunk_text)"
        )
    if not candidates:
        return None
    best, score = rank_sentences(question, candidates, similarities)[0]
    if best.end - best.start > max_chars:
        end = _cut(chunk_text, best.start, max_chars)
        return Quote(chunk_text[best.start : end], best.start, end, score)
    position = next(i for i, unit in enumerate(units) if unit.start == best.start)
    end = best.end
    previous = best
    for following in units[position + 1 : position + 1 + MAX_EXTRA_UNITS]:
        if following.end - best.start > max_chars:
            break
        if not _continues(chunk_text, best, previous, following):
            break
        end = following.end
        previous = following
    return Quote(chunk_text[best.start : end], best.start, end, score)


def _candidates(units: Sequence[Sentence]) -> list[Sentence]:
    return [
        unit
        for position, unit in enumerate(units)
        if not is_heading(unit)
        and not (position + 1 < len(units) and is_table_rule(units[position + 1]))
        and _quotable(unit)
    ]


def _quotable(unit: Sentence) -> bool:
    """Enough words to state something; an intro such as "Causes:" states its list, and a short
    sentence with a figure or a name ("Defaults to 1000.") states the value of what came
    before it, which is what reference pages put in it."""
    words = len(content_words(unit.text))
    return (
        words >= MIN_CANDIDATE_WORDS
        or (words >= 1 and unit.text.endswith(":"))
        or (words >= 1 and bool(identifiers(unit.text)))
    )


def _continues(source: str, first: Sentence, previous: Sentence, following: Sentence) -> bool:
    """Whether `following` carries on what the quote from `first` to `previous` says."""
    if is_heading(following) or is_table_row(following) or is_table_row(first):
        return False
    if previous.text.rstrip().endswith(":"):
        return True  # "Causes, most frequent first:" announces what follows
    if source.count("\n", previous.end, following.start) >= 2:
        return False  # a paragraph break
    if is_list_item(first) and not is_list_item(following):
        return True  # the rest of the same step
    short = SHORT_STEP_CHARS if is_list_item(following) else SHORT_QUOTE_CHARS
    return previous.end - first.start < short


def _cut(source: str, start: int, max_chars: int) -> int:
    """An end offset in (start, start + max_chars] at a word boundary, trailing punctuation
    trimmed; mid-word only when the first max_chars characters hold no usable boundary."""
    limit = start + max_chars  # inside the sentence: it is longer than max_chars
    for position in range(limit, start, -1):
        if source[position].isspace():
            trimmed = position
            while trimmed > start and (
                source[trimmed - 1].isspace() or source[trimmed - 1] in ",;:(-\u2013"
            ):
                trimmed -= 1
            if trimmed > start:
                return trimmed
            break
    cut = limit
    while cut > start + 1 and source[cut - 1].isspace():
        cut -= 1
    return cut
