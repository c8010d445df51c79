"""Machine-readable refusals: every bad or unanswerable question gets one of these."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from models.base import SCHEMA_VERSION, Identifier, WireModel


class ErrorCode(StrEnum):
    """Stable codes integrators switch on; the message is for humans and may change."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_ENCODING = "invalid_encoding"
    INVALID_JSON = "invalid_json"
    INVALID_QUESTION = "invalid_question"
    FORBIDDEN_RESPONSE_TOPIC = "forbidden_response_topic"
    BUSY = "busy"
    RATE_LIMITED = "rate_limited"
    """The terminal asked faster than `limits.questions_per_minute`; retryable."""
    EXPIRED = "expired"
    QUESTION_TOO_LONG = "question_too_long"
    WORKER_FAILED = "worker_failed"
    WORKER_TIMEOUT = "worker_timeout"
    WORKER_OOM = "worker_oom"
    WORKER_UNAVAILABLE = "worker_unavailable"
    UNDELIVERABLE = "undeliverable"
    """JetStream stopped redelivering the question (MaxDeliver): no gateway could answer it."""
    INTERNAL = "internal"


class ErrorReply(WireModel):
    """Sent instead of an answer, to the asker only."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["error"] = "error"
    question_id: Identifier | None = Field(
        description="The question's id when it could be read, else null."
    )
    terminal_id: Identifier
    code: ErrorCode
    message: Annotated[str, Field(max_length=1024)]
    retryable: bool = Field(description="True when sending the same question later may succeed.")
    sent_at: datetime
