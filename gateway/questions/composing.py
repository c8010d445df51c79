"""Composing the answer text from the retrieved chunks: quotes, the prompt's excerpts, and the
gate every generated sentence passes before a terminal sees it.

The bundled model is tiny: it condenses two or three sentences it was handed well enough and
reads a 1,200-token prompt badly (it loops, invents settings, drops negations). So the prompt
carries only the best sentences of the retrieved chunks (within a token budget), and the model's
output is cut into sentences as it streams: each one is checked against those excerpts, a
sentence that repeats an earlier one ends the answer, and in checked mode only supported
sentences are kept. Plain logic over strings; the I/O (embedding, generation) is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.grounding import (
    Quote,
    RepetitionGuard,
    Unsupported,
    check_answer,
    content_words,
    quote_candidates,
    rank_sentences,
    select_quote,
    split_sentences,
)
from gateway.grounding.answer_type import (
    Expectation,
    expectation,
    expected_kinds,
    kinds_in,
    type_bonus,
)

CHARS_PER_TOKEN = 3.6
"""For choosing sentences within the token budget before the exact count (English manuals,
SmolLM2's tokenizer: 3.5-4 characters a token); the worker's count has the last word."""
REPEAT_OVERLAP = 0.8
"""A generated sentence sharing this much of its content words with an earlier one is a repeat."""
MIN_JUDGED_WORDS = 3


@dataclass(frozen=True, slots=True)
class RankedSentence:
    hit_index: int
    start: int
    end: int
    text: str
    score: float


def candidate_texts(chunk_texts: Sequence[str]) -> list[list[str]]:
    """Per chunk, the sentences worth embedding (the contract of `quote_candidates`)."""
    return [[s.text for s in quote_candidates(text)] for text in chunk_texts]


EMBEDDED_PER_CHUNK = 8
"""Sentences of one chunk worth an embedding (7-10 ms each on 2 cores): the rest of a long
chunk is ranked on its words alone, with a cosine of 0."""


def embedding_plan(question: str, chunk_texts: Sequence[str]) -> list[list[int]]:
    """Per chunk, the positions (in `candidate_texts` order) of the candidates to embed: all of
    them in a short chunk, the best EMBEDDED_PER_CHUNK by words and identifiers in a long one."""
    plan: list[list[int]] = []
    for text in chunk_texts:
        candidates = quote_candidates(text)
        if len(candidates) <= EMBEDDED_PER_CHUNK:
            plan.append(list(range(len(candidates))))
            continue
        position = {id(c): i for i, c in enumerate(candidates)}
        ranked = rank_sentences(question, candidates, None)[:EMBEDDED_PER_CHUNK]
        plan.append(sorted(position[id(sentence)] for sentence, _ in ranked))
    return plan


def sentence_affinities(
    question: str, candidates: Sequence[Sequence[str]], cosines: Sequence[Sequence[float]]
) -> list[list[float]]:
    """Per candidate sentence: its cosine to the question plus the bonus for holding the kind of
    answer the question asks for (a number, a default, a setting name; grounding.answer_type)."""
    expected = expectation(question)
    return [
        [c + type_bonus(expected, text) for text, c in zip(group, values, strict=True)]
        for group, values in zip(candidates, cosines, strict=True)
    ]


def quote_order(
    question: str, chunk_similarities: Sequence[float], quotes: Sequence[Quote | None]
) -> list[int]:
    """Indexes of the chunks that have a quote, best quote first: the chunk's similarity to the
    question plus half the answer-kind bonus of its quote (search order breaks ties). Quote
    scores themselves are relative to their own chunk and do not compare across chunks."""
    expected = expectation(question)
    scored = [
        (i, chunk_similarities[i] + 0.5 * type_bonus(expected, q.text))
        for i, q in enumerate(quotes)
        if q is not None
    ]
    return [i for i, _ in sorted(scored, key=lambda item: (-item[1], item[0]))]


def choose_quotes(
    question: str,
    chunk_texts: Sequence[str],
    similarities: Sequence[Sequence[float]] | None,
    *,
    max_chars: int,
) -> list[Quote | None]:
    """The best quote of each chunk; `similarities` aligns with `candidate_texts`.

    A quote that lacks a kind of answer the question asks for (a default, a figure, a name) is
    completed with the nearest sentence of its chunk that has it, after the quote or before it,
    when the whole stays within `max_chars`: reference pages define a setting in one sentence
    and give its value or default in another ("Default value is 90 C." before the warning
    thresholds, "Defaults to 1800 seconds." after the special case of 0).
    """
    expected = expectation(question)
    quotes: list[Quote | None] = []
    for i, text in enumerate(chunk_texts):
        quote = select_quote(
            question,
            text,
            similarities[i] if similarities is not None else None,
            max_chars=max_chars,
        )
        if quote is not None:
            quote = _complete_answer(text, quote, expected, max_chars)
        quotes.append(quote)
    return quotes


def _complete_answer(text: str, quote: Quote, expected: Expectation, max_chars: int) -> Quote:
    missing = expected_kinds(expected) - kinds_in(expected, quote.text)
    if not missing:
        return quote
    # A default asked for and missing is the one to find; otherwise any missing kind will do.
    wanted = {"default"} if "default" in missing else missing
    outside = [s for s in quote_candidates(text) if s.end <= quote.start or s.start >= quote.end]
    by_distance = sorted(
        outside,
        key=lambda s: (
            s.start - quote.end if s.start >= quote.end else quote.start - s.end,
            s.start < quote.start,
        ),
    )
    for sentence in by_distance:
        start, end = min(sentence.start, quote.start), max(sentence.end, quote.end)
        if end - start > max_chars:
            continue
        if wanted & kinds_in(expected, sentence.text):
            return Quote(text[start:end], start, end, quote.score)
    return quote


def rank_all(
    question: str,
    chunk_texts: Sequence[str],
    similarities: Sequence[Sequence[float]] | None,
) -> list[RankedSentence]:
    """Every candidate sentence of every chunk, best first; a chunk ranked higher by the search
    wins ties, so the prompt leans on what retrieval trusted most."""
    ranked: list[RankedSentence] = []
    for i, text in enumerate(chunk_texts):
        candidates = quote_candidates(text)
        sims = similarities[i] if similarities is not None else None
        for sentence, value in rank_sentences(question, candidates, sims):
            ranked.append(RankedSentence(i, sentence.start, sentence.end, sentence.text, value))
    ranked.sort(key=lambda r: (-r.score, r.hit_index, r.start))
    return ranked


def prompt_excerpts(
    ranked: Sequence[RankedSentence], chunk_count: int, *, budget_tokens: int
) -> list[str]:
    """Per chunk (in search order), its chosen sentences in document order, joined: the best
    sentences overall until the budget is spent. A chunk with none chosen gets ""."""
    budget_chars = budget_tokens * CHARS_PER_TOKEN
    chosen: list[list[RankedSentence]] = [[] for _ in range(chunk_count)]
    used = 0.0
    for sentence in ranked:
        cost = len(sentence.text) + 1
        if used + cost > budget_chars and used > 0:
            continue
        chosen[sentence.hit_index].append(sentence)
        used += cost
    return [" ".join(s.text for s in sorted(group, key=lambda s: s.start)) for group in chosen]


def _overlap(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a) if a else 0.0


@dataclass
class SentenceGate:
    """The `on_token` of a generation: cuts the text into sentences as they complete, checks
    each against the excerpts and passes on (`emit`) only what may be published.

    checked=True keeps only supported sentences (boilerplate without three content words, such
    as "See [1].", is kept only once a supported sentence came before it); checked=False keeps
    everything up to a repeat, recording what the check found. A repeated sentence ends it all:
    later text is ignored and `stopped_loop` is set.
    """

    excerpts: Sequence[str]
    checked: bool
    support_threshold: float
    emit: Callable[[str], None] | None = None
    accepted: list[str] = field(default_factory=list)
    unsupported: list[Unsupported] = field(default_factory=list)
    supported_count: int = 0
    stopped_loop: bool = False
    _buffer: str = ""
    _held: list[str] = field(default_factory=list)
    _seen: list[set[str]] = field(default_factory=list)
    _guard: RepetitionGuard = field(default_factory=RepetitionGuard)

    def feed(self, piece: str) -> None:
        if self.stopped_loop:
            return
        self._buffer += piece
        sentences = split_sentences(self._buffer)
        if len(sentences) < 2:
            return
        # Everything before the last sentence is complete; keep the tail as the new buffer.
        cut = sentences[-1].start
        complete, self._buffer = self._buffer[:cut], self._buffer[cut:]
        for sentence in split_sentences(complete):
            self._take(sentence.text)
            if self.stopped_loop:
                return

    def finish(self) -> None:
        """The last sentence, complete or not (the generation ended)."""
        if not self.stopped_loop and self._buffer.strip():
            for sentence in split_sentences(self._buffer):
                self._take(sentence.text)
                if self.stopped_loop:
                    break
        self._buffer = ""

    @property
    def text(self) -> str:
        return " ".join(self.accepted).strip()

    def _take(self, sentence: str) -> None:
        if self._guard.feed(sentence + " "):
            self.stopped_loop = True  # a phrase or list that keeps coming back: end here
            return
        words = set(content_words(sentence))
        if len(words) >= MIN_JUDGED_WORDS and any(
            _overlap(words, earlier) >= REPEAT_OVERLAP for earlier in self._seen
        ):
            self.stopped_loop = True
            return
        if len(words) >= MIN_JUDGED_WORDS:
            self._seen.append(words)
        result = check_answer(sentence, self.excerpts, support_threshold=self.support_threshold)
        if result.unsupported:
            self.unsupported.extend(result.unsupported)
            if self.checked:
                return
        judged = len(words) >= MIN_JUDGED_WORDS and not result.unsupported
        if self.checked and not judged and self.supported_count == 0:
            self._held.append(sentence)  # boilerplate before anything supported: wait
            return
        if judged:
            self.supported_count += 1
        for text in [*self._held, sentence]:
            self.accepted.append(text)
            if self.emit is not None:
                self.emit(text + " ")
        self._held.clear()
