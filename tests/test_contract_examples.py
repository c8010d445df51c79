"""docs/contract.md is the wire contract integrators code against: every example in it is true.

Each ```json block of the page is preceded by `<!-- example: Model -->` and is validated against
the committed JSON Schema (models/schemas/) and the pydantic model; the examples must cover every
exported schema. The examples of the last release are frozen in tests/contract/v1/ and replayed
against today's models: a change that breaks one needs schema_version 2. Pure parsing and
validation, no broker and no model.
"""

from __future__ import annotations

import json
import re
import typing
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.validators import validator_for
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as ModelError

from models.answer import Answer, AnswerCheck, PartialAnswer
from models.device import DEVICE_EVENT_ADAPTER, DeviceEvent
from models.diagnosis import DiagnosisState
from models.errors import ErrorCode
from models.health import GatewayState
from models.question import Question
from models.schema import WIRE_MODELS

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "contract.md"
SCHEMAS = REPO / "models" / "schemas"
FROZEN = Path(__file__).resolve().parent / "contract" / "v1"

MARKER = re.compile(r"^<!-- example: (?P<model>[A-Za-z]+) -->$")
FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def model_name(schema_name: str) -> str:
    """`device-event` -> `DeviceEvent`: the name an example marker uses for a schema."""
    return "".join(part.capitalize() for part in schema_name.split("-"))


SCHEMA_OF_MODEL = {model_name(name): name for name in WIRE_MODELS}
"""Marker name -> exported schema name (models/schema.py WIRE_MODELS)."""


# ---- reading the page ------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    model: str
    text: str
    line: int
    ordinal: int  # 1-based among the examples of the same model, in page order

    @property
    def ident(self) -> str:
        return f"{self.model}-{self.ordinal}"


def read_examples(markdown: str) -> tuple[list[Example], list[str]]:
    """Every marked ```json block, and every problem: a json block without a marker right above
    it, a marker not followed by a json block, a marker naming an unknown model."""
    lines = markdown.splitlines()
    examples: list[Example] = []
    problems: list[str] = []
    seen: Counter[str] = Counter()
    claimed: set[int] = set()  # marker lines followed by their json block
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i].strip())
        if opening is None:
            i += 1
            continue
        fence, info = opening["fence"], opening["info"].strip().lower()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end == len(lines):
            problems.append(f"line {i + 1}: code block never closed")
            break
        if info.split() and info.split()[0] == "json":
            marker = MARKER.match(lines[i - 1].strip()) if i > 0 else None
            if marker is None:
                problems.append(
                    f"line {i + 1}: ```json block without `<!-- example: Model -->` right above"
                )
            else:
                claimed.add(i - 1)
                model = marker["model"]
                if model not in SCHEMA_OF_MODEL:
                    problems.append(
                        f"line {i}: unknown model {model!r}; one of {sorted(SCHEMA_OF_MODEL)}"
                    )
                else:
                    seen[model] += 1
                    body = "\n".join(lines[i + 1 : end])
                    examples.append(Example(model, body, i + 2, seen[model]))
        i = end + 1
    for number, line in enumerate(lines):
        if MARKER.match(line.strip()) and number not in claimed:
            problems.append(f"line {number + 1}: marker not followed by a ```json block")
    return examples, problems


EXAMPLES, PROBLEMS = read_examples(DOC.read_text(encoding="utf-8"))
FROZEN_FILES = sorted(FROZEN.glob("*.json"))


# ---- validating ------------------------------------------------------------------------------

RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    """RFC 3339 date-time, offset required (jsonschema checks it only with an extra package)."""
    if not isinstance(value, str):
        return True
    if RFC3339.match(value) is None:
        raise ValueError(f"{value!r} is not an RFC 3339 date-time with an offset")
    datetime.fromisoformat(value.upper())  # month 13, hour 25 ... raise ValueError
    return True


def schema_validator(schema_name: str) -> Any:
    schema = json.loads((SCHEMAS / f"{schema_name}.schema.json").read_text(encoding="utf-8"))
    cls = validator_for(schema, default=Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=FORMATS)


def schema_errors(schema_name: str, data: Any) -> list[str]:
    validator = schema_validator(schema_name)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(data)
    ]


def parse_with_model(schema_name: str, text: str) -> Any:
    model, _mode = WIRE_MODELS[schema_name]
    if isinstance(model, TypeAdapter):
        return model.validate_json(text)
    assert issubclass(model, BaseModel)
    return model.model_validate_json(text)


def dump_with_model(schema_name: str, value: Any) -> Any:
    model, _mode = WIRE_MODELS[schema_name]
    if isinstance(model, TypeAdapter):
        return json.loads(model.dump_json(value))
    return json.loads(value.model_dump_json())


def check_message(schema_name: str, text: str) -> Any:
    """Valid against the committed schema and the pydantic model; returns the parsed model."""
    data = json.loads(text)
    assert isinstance(data, dict), "a message is one JSON object"
    errors = schema_errors(schema_name, data)
    assert not errors, f"{schema_name}.schema.json refuses it:\n" + "\n".join(errors)
    return parse_with_model(schema_name, text)


# ---- the page's examples ---------------------------------------------------------------------


def test_every_json_block_of_the_page_is_a_marked_example_of_a_known_model() -> None:
    assert EXAMPLES, f"no `<!-- example: Model -->` + ```json block found in {DOC}"
    assert not PROBLEMS, f"{DOC.name}:\n" + "\n".join(PROBLEMS)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.ident)
def test_example_is_valid_against_the_schema_and_the_model(example: Example) -> None:
    schema_name = SCHEMA_OF_MODEL[example.model]
    try:
        value = check_message(schema_name, example.text)
    except (ModelError, json.JSONDecodeError, AssertionError) as exc:
        pytest.fail(f"{DOC.name} line {example.line} ({example.ident}): {exc}")
    _model, mode = WIRE_MODELS[schema_name]
    if mode == "serialization":
        # A message the gateway writes: the example has every field the gateway writes, with
        # the value it would write (no abridged examples, no hand-formatted times).
        assert json.loads(example.text) == dump_with_model(schema_name, value), (
            f"{DOC.name} line {example.line} ({example.ident}) is not what the gateway writes"
        )


def test_the_examples_cover_every_exported_schema() -> None:
    documented = {e.model for e in EXAMPLES}
    missing = set(SCHEMA_OF_MODEL) - documented
    assert not missing, f"{DOC.name} has no example of {sorted(missing)}"
    assert documented == set(SCHEMA_OF_MODEL)


def _parsed(model: str) -> list[dict[str, Any]]:
    return [json.loads(e.text) for e in EXAMPLES if e.model == model]


def test_the_examples_show_every_variant_a_reader_must_handle() -> None:
    questions = _parsed("Question")
    assert any(q.get("stream") is True for q in questions), "a streaming question"
    assert any(not q.get("stream", False) for q in questions), "a plain question"

    answers = _parsed("Answer")
    assert any(a["fallback"] for a in answers), "a fallback answer"
    normal = [a for a in answers if not a["fallback"]]
    assert any(
        a["sources"] and all(s["quote"] for s in a["sources"]) and a["grounded"] and a["check"]
        for a in normal
    ), "a normal answer with sources, quotes, grounded and check"

    errors = _parsed("ErrorReply")
    assert {e["retryable"] for e in errors} == {True, False}

    stages = {p["stage"] for p in _parsed("PartialAnswer")}
    assert stages == set(typing.get_args(PartialAnswer.model_fields["stage"].annotation))
    assert all(p["source"] for p in _parsed("PartialAnswer") if p["stage"] == "quote")

    states = {s["state"] for s in _parsed("Status")}
    assert states == {GatewayState.ONLINE, GatewayState.OFFLINE}

    kinds = {e["kind"] for e in _parsed("DeviceEvent")}
    event_types = typing.get_args(typing.get_args(DeviceEvent)[0])
    assert kinds == {typing.get_args(t.model_fields["kind"].annotation)[0] for t in event_types}

    assert {d["state"] for d in _parsed("Diagnosis")} == set(DiagnosisState)


# ---- the frozen examples of earlier releases ---------------------------------------------------


def _frozen_schema(path: Path) -> str:
    name, _, number = path.stem.rpartition("-")
    rule = f"frozen examples are named <schema>-<n>.json, <schema> one of {sorted(WIRE_MODELS)}"
    assert name in WIRE_MODELS, f"{path.name}: {rule}"
    assert number.isdigit(), f"{path.name}: {rule}"
    return name


def test_frozen_examples_exist_for_every_model() -> None:
    assert (FROZEN / "README.md").exists()
    frozen = {_frozen_schema(p) for p in FROZEN_FILES}
    assert frozen == set(WIRE_MODELS), f"missing frozen examples: {set(WIRE_MODELS) - frozen}"


@pytest.mark.parametrize("path", FROZEN_FILES, ids=lambda p: p.name)
def test_frozen_example_of_an_earlier_release_is_still_valid(path: Path) -> None:
    """A v1 message stays a valid v1 message: replayed against today's schemas and models."""
    schema_name = _frozen_schema(path)
    try:
        check_message(schema_name, path.read_text(encoding="utf-8"))
    except (ModelError, AssertionError) as exc:
        pytest.fail(
            f"{path.relative_to(REPO)} no longer validates: this change breaks schema_version 1 "
            f"readers or writers and needs schema_version 2.\n{exc}"
        )


# ---- the compatibility policy ----------------------------------------------------------------


def _first(model: str, **where: Any) -> dict[str, Any]:
    for data in _parsed(model):
        if all(data.get(k) == v for k, v in where.items()):
            return data
    raise AssertionError(f"no {model} example with {where}")


def tolerant_terminal_reader(payload: str) -> tuple[str, str, str]:
    """What the contract asks of a terminal: switch on kind, then schema_version, read the
    fields it knows and ignore the others. Returns (kind, question id, what to show)."""
    message = json.loads(payload)
    kind = message.get("kind")
    if message.get("schema_version") != 1:
        return (str(kind), str(message.get("question_id")), "unsupported schema_version")
    if kind == "answer":
        quotes = [s["quote"] for s in message["sources"] if s.get("quote")]
        return (kind, message["question_id"], "\n".join([message["text"], *quotes]))
    if kind == "error":
        return (kind, str(message["question_id"]), f"{message['code']}: {message['message']}")
    if kind == "partial":
        return (kind, message["question_id"], message["text"])
    return ("unknown", "", "")


def test_readers_ignore_unknown_fields_while_the_gateway_refuses_them() -> None:
    # (a)/(b): a newer gateway may add an optional field; a tolerant reader still works.
    answer = _first("Answer", fallback=False) | {"confidence_hint": 0.9}
    payload = json.dumps(answer)
    kind, question_id, shown = tolerant_terminal_reader(payload)
    assert (kind, question_id) == ("answer", answer["question_id"])
    assert answer["text"] in shown

    # The gateway's own models are strict on input: the unknown field is refused, by name.
    with pytest.raises(ModelError) as refused:
        Answer.model_validate_json(payload)
    assert [e["loc"] for e in refused.value.errors()] == [("confidence_hint",)]
    assert any("confidence_hint" in e for e in schema_errors("answer", answer))


def test_a_question_with_an_unknown_field_is_refused_naming_it() -> None:
    """(c): a typo is an error, not a silently ignored key."""
    from gateway.questions.intake import IntakeError, decode_question

    question = _first("Question", stream=True)
    typo = {k: v for k, v in question.items() if k != "stream"} | {"strem": True}
    with pytest.raises(ModelError) as refused:
        Question.model_validate_json(json.dumps(typo))
    assert [(e["loc"], e["type"]) for e in refused.value.errors()] == [
        (("strem",), "extra_forbidden")
    ]
    assert schema_errors("question", typo), "question.schema.json must refuse it too"

    decoded = decode_question(json.dumps(typo).encode(), max_bytes=16_384, max_depth=8)
    assert isinstance(decoded, IntakeError)
    assert decoded.code == ErrorCode.INVALID_QUESTION
    assert "strem" in decoded.message
    assert decoded.question_id == question["id"]
    # ... and the page's invalid_question example is that very reply.
    error = _first("ErrorReply", code="invalid_question")
    assert error["message"] == decoded.message


def test_a_device_event_with_an_unknown_field_is_refused_naming_it() -> None:
    event = _first("DeviceEvent", kind="alarm_raised") | {"sevrity": "critical"}
    with pytest.raises(ModelError) as refused:
        DEVICE_EVENT_ADAPTER.validate_json(json.dumps(event))
    assert [e["loc"][-1] for e in refused.value.errors()] == ["sevrity"]
    assert schema_errors("device-event", event)


# ---- the tables of the page agree with the code ----------------------------------------------


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_the_error_table_lists_every_error_code_with_the_retryable_flag_the_code_sends() -> None:
    from adapters.jetstream import dead_letter_reply
    from gateway.errors import GatewayError

    rows = {row[0].strip("`"): row for row in _table_rows(_section("Errors"))}
    assert set(rows) == {code.value for code in ErrorCode}, "one row per ErrorCode"
    documented = {code: row[2] for code, row in rows.items()}

    sent: dict[str, bool] = {}
    pending: list[type[GatewayError]] = [GatewayError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        sent.setdefault(cls.code.value, cls.retryable)
        assert sent[cls.code.value] == cls.retryable, f"{cls.code} sent both ways"
    dead = dead_letter_reply("t1", b'{"id": "q-7f3a", "text": "E203?"}', 5)
    assert dead is not None
    assert dead.question_id == "q-7f3a"
    sent[dead.code.value] = dead.retryable
    for code, retryable in sent.items():
        assert documented[code] == str(retryable).lower(), f"{code}: retryable is {retryable}"


LOG_CALL = r"\.{level}\(\s*\"{event}\""


def test_the_logging_table_names_events_the_code_logs_at_that_level() -> None:
    sources = "\n".join(
        path.read_text(encoding="utf-8")
        for folder in ("gateway", "adapters")
        for path in sorted((REPO / folder).rglob("*.py"))
    )
    rows = _table_rows(_section("Dropped and refused messages"))
    assert len(rows) >= 10
    for row in rows:
        event, level = row[0].strip("`"), row[1]
        levels = "(error|exception)" if level == "error" else level
        pattern = LOG_CALL.format(level=levels, event=re.escape(event))
        assert re.search(pattern, sources), f"no log.{level}({event!r}) in gateway/ or adapters/"


def test_the_default_topics_and_subjects_are_the_documented_ones() -> None:
    from gateway.config import DiagnosisConfig, MqttConfig, NatsConfig

    mqtt, nats, diagnosis = MqttConfig(), NatsConfig(), DiagnosisConfig()
    text = DOC.read_text(encoding="utf-8")
    defaults = {
        "mqtt.question_topic": mqtt.question_topic.replace("+", "{terminal_id}"),
        "mqtt.answer_topic": mqtt.answer_topic,
        "mqtt.status_topic": mqtt.status_topic,
        "mqtt.health_topic": mqtt.health_topic,
        "nats.question_subject": nats.question_subject.replace("*", "{terminal_id}"),
        "nats.answer_subject": nats.answer_subject,
        "nats.status_subject": nats.status_subject,
        "nats.health_subject": nats.health_subject,
        "diagnosis.event_topic": diagnosis.event_topic.replace("+", "{device_id}"),
        "diagnosis.diagnosis_topic": diagnosis.diagnosis_topic,
        "diagnosis.alarm_topic": diagnosis.alarm_topic,
        "diagnosis.nats_event_subject": diagnosis.nats_event_subject.replace("*", "{device_id}"),
        "diagnosis.nats_diagnosis_subject": diagnosis.nats_diagnosis_subject,
        "diagnosis.nats_alarm_subject": diagnosis.nats_alarm_subject,
    }
    for key, topic in defaults.items():
        assert f"`{topic}`" in text, f"{key} default {topic!r} is not on the page"
    for prefix in nats.reply_prefixes:
        assert f"`{prefix}`" in text, f"nats.reply_prefixes default {prefix!r} is not on the page"


def test_answer_check_modes_on_the_page_are_the_models() -> None:
    modes = set(typing.get_args(AnswerCheck.model_fields["mode"].annotation))
    section = _section("Messages")
    for mode in modes:
        assert f"`{mode}`" in section
