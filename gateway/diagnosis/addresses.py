"""Where diagnoses are published, per bus, and how an alarm code becomes one topic level.

Alarm codes follow the identifier rule (letters, digits, `.`, `_`, `:`, `-`). On MQTT a code is
one topic level as it stands. On NATS a `.` separates subject tokens, so `TT-101.high` would be
two tokens and `edge.plant1.diagnosis.*.*` would miss it: there each `.` of the code is written
`~` (not an identifier character, so the encoding is reversible, and legal in a NATS token). The
payload always carries the code unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def nats_token(code: str) -> str:
    """`TT-101.high` -> `TT-101~high`: one subject token."""
    return code.replace(".", "~")


def code_from_nats_token(token: str) -> str:
    """The inverse of `nats_token`."""
    return token.replace("~", ".")


def _as_is(code: str) -> str:
    return code


@dataclass(frozen=True, slots=True)
class DiagnosisAddress:
    """Where one bus publishes diagnoses: templates with {device_id} (and {code})."""

    device: str
    alarm: str
    encode_code: Callable[[str], str] = _as_is

    def device_topic(self, device_id: str) -> str:
        return self.device.format(device_id=device_id, code="")

    def alarm_topic(self, device_id: str, code: str) -> str:
        return self.alarm.format(device_id=device_id, code=self.encode_code(code))
