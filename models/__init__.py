"""Wire contracts: every message that crosses the bus, exported as JSON Schema for integrators.

This room owns the pydantic models of questions, answers, errors, device events, diagnoses,
status and health, and their JSON Schema export (schema.py). It imports only pydantic and the
standard library: every other room may import it, it imports none of them.
"""

from models.answer import Answer, AnswerCheck, Latency, PartialAnswer, Source, Usage
from models.base import SCHEMA_VERSION
from models.device import (
    DEVICE_EVENT_ADAPTER,
    AlarmCleared,
    AlarmRaised,
    DeviceEvent,
    Severity,
    ThresholdCrossed,
)
from models.diagnosis import Diagnosis, DiagnosisDraft, DiagnosisState
from models.errors import ErrorCode, ErrorReply
from models.health import GatewayState, Health, Status
from models.question import Question

__all__ = [
    "DEVICE_EVENT_ADAPTER",
    "SCHEMA_VERSION",
    "AlarmCleared",
    "AlarmRaised",
    "Answer",
    "AnswerCheck",
    "DeviceEvent",
    "Diagnosis",
    "DiagnosisDraft",
    "DiagnosisState",
    "ErrorCode",
    "ErrorReply",
    "GatewayState",
    "Health",
    "Latency",
    "PartialAnswer",
    "Question",
    "Severity",
    "Source",
    "Status",
    "ThresholdCrossed",
    "Usage",
]
