"""What a terminal sends: one question, in its own words."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from models.base import SCHEMA_VERSION, Identifier, WireModel

MAX_QUESTION_CHARS = 2_000

QuestionText = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_QUESTION_CHARS, strip_whitespace=True)
]


class Question(WireModel):
    """A terminal's question.

    The terminal id is not in the payload: it is taken from the topic or subject the question
    arrived on, which the broker's ACL ties to the terminal's credentials. A payload cannot claim
    to be another terminal.
    """

    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION, description="Wire contract version; 1 today."
    )
    id: Identifier | None = Field(
        default=None,
        description=(
            "The terminal's own id for this question. A redelivered question with the same id is "
            "answered once, from the stored answer. When absent, the MQTT 5 correlation data or, "
            "failing that, a hash of the payload stands in."
        ),
    )
    text: QuestionText = Field(description="The question, 1 to 2000 characters.")
    conversation_id: Identifier | None = Field(
        default=None,
        description=(
            "Makes this question a turn of a conversation: the earlier turns of the same "
            "conversation of the same terminal take part in retrieval and in the prompt, so "
            "'and how do I fix it?' follows the question before. Chosen by the terminal; a new "
            "id starts a new conversation. Without it the question is answered alone."
        ),
    )
    stream: bool = Field(
        default=False,
        description=(
            "Also send the answer in pieces while the model writes it (PartialAnswer, QoS 0, on "
            "the reply topic + `/partial`, NATS: `.partial`). The final Answer is sent as always."
        ),
    )
