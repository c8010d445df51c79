"""Every bad payload of issue 2 item 13 becomes a precise IntakeError, never an exception."""

from __future__ import annotations

import json

import pytest

from gateway.questions.intake import IntakeError, decode_question, json_depth, question_key
from models.errors import ErrorCode
from models.question import Question

LIMITS = {"max_bytes": 16_384, "max_depth": 8}


def decode(payload: bytes) -> Question | IntakeError:
    return decode_question(payload, **LIMITS)


def test_valid_question_is_decoded() -> None:
    q = decode(b'{"id": "q-1", "text": "  What does E203 mean?  "}')
    assert isinstance(q, Question)
    assert q.id == "q-1"
    assert q.text == "What does E203 mean?"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"x" * 16_385, ErrorCode.PAYLOAD_TOO_LARGE),
        (b"\xff\xfe{}", ErrorCode.INVALID_ENCODING),
        (b"not json", ErrorCode.INVALID_JSON),
        (b"[" * 50 + b"]" * 50, ErrorCode.INVALID_JSON),
        (b'{"text": "a", "n": 1' + b"0" * 5000 + b"}", ErrorCode.INVALID_JSON),
        (b'{"text": NaN}', ErrorCode.INVALID_JSON),
        (b'{"text": Infinity}', ErrorCode.INVALID_JSON),
        (b'{"text": "a", "text": "b"}', ErrorCode.INVALID_JSON),
        (b'{"text": "\\ud800"}', ErrorCode.INVALID_ENCODING),
        (b'{"text": "a\\u0000b"}', ErrorCode.INVALID_QUESTION),
        (b'"just a string"', ErrorCode.INVALID_QUESTION),
        (b"{}", ErrorCode.INVALID_QUESTION),
        (b'{"text": ""}', ErrorCode.INVALID_QUESTION),
        (b'{"text": "   "}', ErrorCode.INVALID_QUESTION),
        (json.dumps({"text": "x" * 2001}).encode(), ErrorCode.INVALID_QUESTION),
        (b'{"text": "ok", "colour": "red"}', ErrorCode.INVALID_QUESTION),
        (b'{"text": 42}', ErrorCode.INVALID_QUESTION),
        (b'{"text": "ok", "id": "a/b"}', ErrorCode.INVALID_QUESTION),
        (b'{"text": "ok", "schema_version": 2}', ErrorCode.INVALID_QUESTION),
        (b"", ErrorCode.INVALID_JSON),
    ],
)
def test_bad_payloads_are_refused_with_their_code(payload: bytes, code: ErrorCode) -> None:
    result = decode(payload)
    assert isinstance(result, IntakeError), result
    assert result.code == code, result.message
    assert result.message


def test_refusal_keeps_a_readable_question_id() -> None:
    result = decode(b'{"id": "q-7", "text": ""}')
    assert isinstance(result, IntakeError)
    assert result.question_id == "q-7"


def test_depth_ignores_brackets_inside_strings() -> None:
    assert json_depth('{"a": "[[[[[[[[[[", "b": [1, {"c": 2}]}') == 3


def test_question_key_prefers_own_id_then_correlation_then_payload() -> None:
    with_id = Question(id="abc", text="x")
    without = Question(text="x")
    assert question_key(with_id, correlation_data=b"c", payload=b"p") == "abc"
    by_corr = question_key(without, correlation_data=b"c", payload=b"p")
    assert by_corr.startswith("c-")
    assert by_corr == question_key(without, correlation_data=b"c", payload=b"other")
    by_payload = question_key(without, correlation_data=None, payload=b"p")
    assert by_payload.startswith("h-")
    assert by_payload != question_key(without, correlation_data=None, payload=b"q")
