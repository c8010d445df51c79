"""What the gateway sends back: a grounded answer with the document sections it came from."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt

from models.base import SCHEMA_VERSION, Identifier, ShortText, WireModel

Score = Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False)]


class Source(WireModel):
    """One knowledge-base chunk the answer was grounded on."""

    document: Annotated[str, Field(max_length=1024)] = Field(
        description="Path of the document the chunk was ingested from."
    )
    section: ShortText = Field(default="", description="Heading path or CSV record key.")
    page: NonNegativeInt | None = Field(default=None, description="1-based page (PDF only).")
    score: Score = Field(description="Cosine similarity of the chunk to the question (-1..1).")
    chunk_id: NonNegativeInt = Field(description="Stable id of the chunk in the knowledge base.")
    quote: Annotated[str, Field(max_length=1024)] = Field(
        default="",
        description=(
            "The sentences of this chunk that best answer the question, an exact substring of "
            "the chunk's text: the manual's own lines, to show as they are. Empty when none fits."
        ),
    )


class Usage(WireModel):
    """Token counts of the model call (zero when the model was not called)."""

    prompt_tokens: NonNegativeInt = 0
    completion_tokens: NonNegativeInt = 0


class Latency(WireModel):
    """Where the time went, in milliseconds, measured inside the gateway."""

    queue_ms: NonNegativeFloat = Field(description="From receipt to the start of processing.")
    retrieve_ms: NonNegativeFloat = Field(description="Embedding and hybrid search.")
    generate_ms: NonNegativeFloat = Field(description="Model time, zero for fallbacks.")
    total_ms: NonNegativeFloat = Field(description="From receipt to the answer being ready.")


AnswerMode = Literal["extractive", "generative", "checked"]


class AnswerCheck(WireModel):
    """How the answer text was made and what the grounding check found."""

    mode: AnswerMode = Field(
        description=(
            "extractive: the text is built from the quotes, no model call; generative: model "
            "text, checked but published as written; checked: model text whose unsupported "
            "sentences were removed, or replaced by the extractive text."
        )
    )
    unsupported: tuple[Annotated[str, Field(max_length=1024)], ...] = Field(
        default=(),
        max_length=32,
        description=(
            "Generated sentences the cited excerpts do not support (a figure, code, part "
            "number, path or setting they lack, or a claim no excerpt sentence carries). In "
            "checked mode none of them is in `text`."
        ),
    )
    replaced: bool = Field(
        default=False,
        description="Checked mode: nothing generated passed, the text is the extractive answer.",
    )
    stopped: Literal["loop"] | None = Field(
        default=None,
        description="loop: the model started repeating itself and was stopped; the repeats "
        "are not in `text`.",
    )


class PartialAnswer(WireModel):
    """A piece of an answer while it is being made: best effort, QoS 0.

    The first piece (`stage` quote, seq 0) is the best quote of the manual, sent right after
    retrieval and before any model token; `source` says where it is from. The pieces of `stage`
    text that follow, concatenated in `seq` order, are a prefix of the final answer's text
    (before its surrounding whitespace is trimmed); in checked mode each is a whole sentence
    that passed the grounding check. A gap in `seq` means a piece was lost on the way; the final
    Answer, sent afterwards at QoS 1, is always complete and is the one to keep.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["partial"] = "partial"
    question_id: Identifier
    terminal_id: Identifier
    seq: NonNegativeInt = Field(description="0 for the first piece, then +1 per piece sent.")
    text: Annotated[str, Field(max_length=32_768)] = Field(
        description="The text written since the previous piece (stage text), or the quote."
    )
    stage: Literal["quote", "text"] = Field(
        default="text", description="quote: the manual's own lines; text: the answer text."
    )
    source: Source | None = Field(default=None, description="Where the quote is from.")


class Answer(WireModel):
    """The authoritative answer to one question."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["answer"] = "answer"
    question_id: Identifier = Field(description="The question's id (its own or the derived one).")
    terminal_id: Identifier
    conversation_id: Identifier | None = Field(
        default=None,
        description="The question's conversation_id, echoed; null for a question asked alone.",
    )
    history_turns: NonNegativeInt = Field(
        default=0,
        description=(
            "How many earlier turns of the conversation were used (0: none, e.g. the first "
            "question, an expired or unknown conversation, or no conversation_id)."
        ),
    )
    text: Annotated[str, Field(max_length=32_768)]
    sources: tuple[Source, ...] = Field(default=(), max_length=32)
    fallback: bool = Field(
        description="True when nothing in the knowledge base was close enough; no model call."
    )
    cached: bool = Field(
        default=False,
        description=(
            "True when the text and sources are those of an earlier answer to a nearly identical "
            "question against the same knowledge-base version; the model was not run again."
        ),
    )
    model: ShortText = Field(
        description="Generation model that wrote the text (empty for fallbacks and extractive "
        "answers)."
    )
    grounded: bool = Field(
        default=False,
        description=(
            "True when every sentence of `text` is supported by the cited excerpts: quotes "
            "(extractive), or generated sentences that passed the grounding check. False for "
            "fallbacks and for generative text that failed it (see `check.unsupported`)."
        ),
    )
    check: AnswerCheck | None = Field(
        default=None, description="How the text was made and checked; null for fallbacks."
    )
    usage: Usage = Usage()
    latency: Latency
    answered_at: datetime
