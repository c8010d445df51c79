"""What plant devices send: alarm raised, alarm cleared, telemetry threshold crossed.

The device id is not in the payload: like a terminal id it is taken from the topic or subject the
event arrived on, which the broker's ACL ties to the device's credentials. The alarm code travels
in topics (`.../diagnosis/{device_id}/{code}`), so it has the same character rules as an id.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, StringConstraints, TypeAdapter

from models.base import SCHEMA_VERSION, WireModel

ALARM_CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
AlarmCode = Annotated[
    str, StringConstraints(min_length=1, max_length=32, pattern=ALARM_CODE_PATTERN)
]
"""`E203`, `C-12`, `TT-101.high`: no separators or wildcards, since it becomes a topic level."""

Unit = Annotated[str, StringConstraints(max_length=16)]
Measurement = Annotated[float, Field(allow_inf_nan=False)]


class Severity(StrEnum):
    """Ordered from least to most urgent; `critical` diagnoses jump ahead of questions."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class _DeviceEventBase(WireModel):
    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION, description="Wire contract version; 1 today."
    )
    code: AlarmCode = Field(description="The device's alarm or measurement code, e.g. E203.")
    severity: Severity = Severity.WARNING
    value: Measurement | None = Field(default=None, description="The measured value, if any.")
    unit: Unit | None = Field(default=None, description="Unit of `value`, e.g. bar or degC.")
    timestamp: AwareDatetime = Field(
        description="When the device saw it (ISO 8601, with offset: a time without one is refused)."
    )
    text: Annotated[str, StringConstraints(max_length=512)] | None = Field(
        default=None, description="The device's own alarm text, if it has one."
    )


class AlarmRaised(_DeviceEventBase):
    kind: Literal["alarm_raised"]


class AlarmCleared(_DeviceEventBase):
    kind: Literal["alarm_cleared"]


class ThresholdCrossed(_DeviceEventBase):
    """A telemetry value left its band; diagnosed like an alarm under its measurement code."""

    kind: Literal["threshold_crossed"]
    value: Measurement = Field(description="The measured value that crossed the threshold.")
    threshold: Measurement | None = Field(default=None, description="The limit that was crossed.")


DeviceEvent = Annotated[AlarmRaised | AlarmCleared | ThresholdCrossed, Field(discriminator="kind")]
DEVICE_EVENT_ADAPTER: TypeAdapter[DeviceEvent] = TypeAdapter(DeviceEvent)
