"""Shared base for every wire contract.

Integrators generate code from the exported JSON Schemas, so every model is strict: unknown fields
are refused (a typo in a field name is an error, not a silently ignored key), values are not
coerced across types, and every string carries a length bound.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

SCHEMA_VERSION: Literal[1] = 1
"""Bumped on any incompatible change of a wire message; consumers check it first."""

ShortText = Annotated[str, StringConstraints(max_length=256)]
IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=IDENTIFIER_PATTERN)
]
"""Ids travel inside MQTT topics and NATS subjects, so no separators or wildcards are allowed."""


class WireModel(BaseModel):
    """Strict, immutable base of all messages that cross the bus."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        str_max_length=65_536,
        ser_json_inf_nan="null",
    )
