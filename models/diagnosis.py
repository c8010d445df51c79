"""What SCADA receives: a structured diagnosis of one device alarm, retained per device.

`DiagnosisDraft` is the part the model writes; its JSON Schema is compiled into a llama.cpp
grammar, so the model can only emit text that parses into it. Every bound the grammar cannot
express (llama.cpp's converter ignores `minimum`/`maximum`) is expressed another way: the
confidence is an enum of eleven steps. Pydantic still validates the result, and a failure is an
error, never repaired.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, NonNegativeFloat, PositiveInt, StringConstraints

from models.answer import Source
from models.base import SCHEMA_VERSION, Identifier, ShortText, WireModel
from models.device import AlarmCode, Severity

CONFIDENCE_STEPS = tuple(round(i / 10, 1) for i in range(11))

# One line, no quote or backslash: nothing the model writes needs escaping, and a raw control
# character (which llama.cpp's default JSON string rule would allow) can never appear.
Summary = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r'^[^"\\\x00-\x1f]{1,100}$')
]
Item = Annotated[
    str, StringConstraints(min_length=1, max_length=48, pattern=r'^[^"\\\x00-\x1f]{1,48}$')
]
Confidence = Annotated[
    float,
    Field(ge=0.0, le=1.0, allow_inf_nan=False, json_schema_extra={"enum": list(CONFIDENCE_STEPS)}),
]


class DiagnosisState(StrEnum):
    ACTIVE = "active"
    CLEARED = "cleared"


class DiagnosisDraft(WireModel):
    """The model-written part of a diagnosis (the grammar's schema). Lists are ranked."""

    summary: Summary = Field(description="One or two sentences: what the alarm means.")
    probable_causes: tuple[Item, ...] = Field(
        min_length=1, max_length=3, description="Most probable first."
    )
    recommended_actions: tuple[Item, ...] = Field(
        min_length=1, max_length=3, description="In the order to carry them out."
    )
    confidence: Confidence = Field(description="0.0 to 1.0 in steps of 0.1.")


class Diagnosis(WireModel):
    """Retained on `edge/{site}/diagnosis/{device_id}` and `.../{device_id}/{code}`."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["diagnosis"] = "diagnosis"
    device_id: Identifier
    alarm_code: AlarmCode
    severity: Severity
    state: DiagnosisState
    summary: Annotated[str, StringConstraints(max_length=1_024)]
    probable_causes: tuple[Item, ...] = Field(
        default=(), max_length=3, description="Most probable first; empty for fallbacks."
    )
    recommended_actions: tuple[Item, ...] = Field(
        default=(), max_length=3, description="In order; for fallbacks, contacting support."
    )
    sources: tuple[Source, ...] = Field(default=(), max_length=32)
    confidence: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
    fallback: bool = Field(
        description="True when the knowledge base had nothing on this alarm (no model call) or "
        "the model's output failed validation."
    )
    cached: bool = Field(
        description="True when reused from an earlier diagnosis of the same device and code "
        "with the knowledge base unchanged."
    )
    repeat_count: PositiveInt = Field(
        description="Events of this alarm coalesced into this diagnosis (1 = no repeats)."
    )
    value: float | None = Field(default=None, allow_inf_nan=False)
    unit: Annotated[str, StringConstraints(max_length=16)] | None = None
    model: ShortText = Field(description="Generation model (empty for fallbacks).")
    generate_ms: NonNegativeFloat = 0.0
    raised_at: datetime = Field(description="Timestamp of the first event in the window.")
    generated_at: datetime
