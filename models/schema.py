"""Exports the JSON Schema of every wire message, for integrators' code generators."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from models.answer import Answer
from models.errors import ErrorReply
from models.health import Health, Status
from models.question import Question

# Terminals produce questions (validation schema); the gateway produces the rest (serialization).
WIRE_MODELS: dict[str, tuple[type[BaseModel], JsonSchemaMode]] = {
    "question": (Question, "validation"),
    "answer": (Answer, "serialization"),
    "error-reply": (ErrorReply, "serialization"),
    "health": (Health, "serialization"),
    "status": (Status, "serialization"),
}


def schema_text(model: type[BaseModel], mode: JsonSchemaMode) -> str:
    return json.dumps(model.model_json_schema(mode=mode), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (model, mode) in WIRE_MODELS.items():
        path = directory / f"{name}.schema.json"
        path.write_text(schema_text(model, mode), encoding="utf-8")
        written.append(path)
    return written
