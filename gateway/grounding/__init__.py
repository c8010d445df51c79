"""Grounding: the manual's own lines first; every generated sentence checked.

This room owns sentence splitting, quote selection, extractive answers, the grounding check and
the repetition guard. The local model is tiny (135M parameters) and mostly produces wrong or
looping text, so the gateway leans on the documents: it quotes the best sentence of a retrieved
chunk verbatim, builds short extractive answers from such quotes only, checks every sentence a
model writes against the excerpts it was given (hard facts first: figures, codes, part numbers,
paths and option names), and stops a generation that starts to loop.

It imports only the standard library and numpy: nothing from the rest of gateway/, adapters/ or
models/. Everything here is pure functions over strings (no I/O, no model): the caller computes
embedding similarities where a function accepts them, so this room stays testable and cheap.
"""

from gateway.grounding.check import (
    DEFAULT_SUPPORT_THRESHOLD,
    CheckResult,
    Unsupported,
    answer_sentences,
    check_answer,
)
from gateway.grounding.extractive import extractive_answer
from gateway.grounding.loops import RepetitionGuard, has_loop
from gateway.grounding.quotes import Quote, quote_candidates, rank_sentences, select_quote
from gateway.grounding.sentences import Sentence, split_sentences
from gateway.grounding.terms import content_words, identifiers

__all__ = [
    "DEFAULT_SUPPORT_THRESHOLD",
    "CheckResult",
    "Quote",
    "RepetitionGuard",
    "Sentence",
    "Unsupported",
    "answer_sentences",
    "check_answer",
    "content_words",
    "extractive_answer",
    "has_loop",
    "identifiers",
    "quote_candidates",
    "rank_sentences",
    "select_quote",
    "split_sentences",
]
