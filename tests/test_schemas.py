"""The JSON Schemas in models/schemas/ are exactly what the code exports."""

from __future__ import annotations

from pathlib import Path

from models.schema import WIRE_MODELS, schema_text

SCHEMAS = Path(__file__).resolve().parent.parent / "models" / "schemas"


def test_committed_schemas_match_the_models() -> None:
    for name, (model, mode) in WIRE_MODELS.items():
        path = SCHEMAS / f"{name}.schema.json"
        assert path.exists(), f"run `edge-gateway schema` to write {path}"
        assert path.read_text() == schema_text(model, mode), f"{path} is stale: `make schema`"


def test_question_schema_forbids_unknown_fields_and_bounds_strings() -> None:
    import json

    schema = json.loads((SCHEMAS / "question.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert schema["properties"]["text"]["maxLength"] == 2000
