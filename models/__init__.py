"""Wire contracts: every message that crosses the bus, exported as JSON Schema for integrators."""

from models.answer import Answer, Latency, Source, Usage
from models.base import SCHEMA_VERSION
from models.errors import ErrorCode, ErrorReply
from models.health import GatewayState, Health, Status
from models.question import Question

__all__ = [
    "SCHEMA_VERSION",
    "Answer",
    "ErrorCode",
    "ErrorReply",
    "GatewayState",
    "Health",
    "Latency",
    "Question",
    "Source",
    "Status",
    "Usage",
]
