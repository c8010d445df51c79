"""Exports the JSON Schema of every wire message, for integrators' code generators."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from models.answer import Answer, PartialAnswer
from models.device import DEVICE_EVENT_ADAPTER
from models.diagnosis import Diagnosis
from models.errors import ErrorReply
from models.health import Health, Status
from models.question import Question

# Terminals produce questions (validation schema); the gateway produces the rest (serialization).
WireModelType = type[BaseModel] | TypeAdapter[Any]
WIRE_MODELS: dict[str, tuple[WireModelType, JsonSchemaMode]] = {
    "question": (Question, "validation"),
    "answer": (Answer, "serialization"),
    "partial-answer": (PartialAnswer, "serialization"),
    "error-reply": (ErrorReply, "serialization"),
    "health": (Health, "serialization"),
    "status": (Status, "serialization"),
    "device-event": (DEVICE_EVENT_ADAPTER, "validation"),
    "diagnosis": (Diagnosis, "serialization"),
}


def schema_text(model: WireModelType, mode: JsonSchemaMode) -> str:
    if isinstance(model, TypeAdapter):
        schema = model.json_schema(mode=mode)
    else:
        schema = model.model_json_schema(mode=mode)
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (model, mode) in WIRE_MODELS.items():
        path = directory / f"{name}.schema.json"
        path.write_text(schema_text(model, mode), encoding="utf-8")
        written.append(path)
    return written
