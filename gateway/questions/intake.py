"""Turning raw bytes from the bus into a validated Question, or a precise refusal.

Python's json module is permissive in ways that hurt a long-running daemon (see DESIGN.md): deep
nesting raises RecursionError, huge integers burn CPU, NaN is accepted, duplicate keys silently
win and lone surrogates fail much later inside SQLite. Each is checked here, before or during
parsing, and becomes an `IntakeError` with a wire code; nothing raises past this module.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from models.base import IDENTIFIER_PATTERN
from models.errors import ErrorCode
from models.question import Question

MAX_INT_DIGITS = 20


@dataclass(frozen=True, slots=True)
class IntakeError:
    """Why a payload was refused; `question_id` is set when it could be read before the failure."""

    code: ErrorCode
    message: str
    question_id: str | None = None


class PayloadRefused(Exception):
    """A payload refused before validation (size, encoding, JSON shape), with its wire code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def json_depth(text: str) -> int:
    """Maximum nesting depth of arrays/objects, ignoring brackets inside strings. Linear time."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PayloadRefused(ErrorCode.INVALID_JSON, f"duplicate key {key[:64]!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise PayloadRefused(ErrorCode.INVALID_JSON, f"{name} is not valid JSON")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise PayloadRefused(
            ErrorCode.INVALID_JSON, f"integer with more than {MAX_INT_DIGITS} digits"
        )
    return int(text)


def _check_strings(value: Any) -> None:
    """Lone surrogates (from `\\ud800` escapes) and NUL cannot be stored or forwarded safely."""
    if isinstance(value, str):
        if "\x00" in value:
            raise PayloadRefused(ErrorCode.INVALID_QUESTION, "strings must not contain NUL")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PayloadRefused(
                ErrorCode.INVALID_ENCODING, "string contains a lone surrogate escape"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key)
            _check_strings(item)
    elif isinstance(value, list):
        for item in value:
            _check_strings(item)


def parse_json_object(payload: bytes, *, max_bytes: int, max_depth: int) -> dict[str, Any]:
    """Parse a JSON object under explicit limits; raises `PayloadRefused` with the wire code."""
    if len(payload) > max_bytes:
        raise PayloadRefused(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"payload is {len(payload)} bytes; the limit is {max_bytes}",
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadRefused(
            ErrorCode.INVALID_ENCODING, f"payload is not UTF-8 (byte {exc.start})"
        ) from None
    if json_depth(text) > max_depth:
        raise PayloadRefused(ErrorCode.INVALID_JSON, f"JSON nested deeper than {max_depth} levels")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_refuse_constant,
            parse_int=_bounded_int,
        )
    except PayloadRefused:
        raise
    except (ValueError, RecursionError) as exc:
        raise PayloadRefused(ErrorCode.INVALID_JSON, f"invalid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PayloadRefused(ErrorCode.INVALID_QUESTION, "the payload must be a JSON object")
    _check_strings(value)
    return value


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "(payload)"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def decode_question(payload: bytes, *, max_bytes: int, max_depth: int) -> Question | IntakeError:
    """The only way bytes become a Question."""
    try:
        data = parse_json_object(payload, max_bytes=max_bytes, max_depth=max_depth)
    except PayloadRefused as refused:
        return IntakeError(refused.code, refused.message)
    raw_id = data.get("id")
    readable_id = raw_id if isinstance(raw_id, str) and is_identifier(raw_id) else None
    try:
        return Question.model_validate(data)
    except ValidationError as exc:
        return IntakeError(ErrorCode.INVALID_QUESTION, _describe(exc), question_id=readable_id)


_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


def is_identifier(value: str) -> bool:
    """Same rule as `models.base.Identifier`: safe inside a topic level or subject token."""
    return _IDENTIFIER.fullmatch(value) is not None


def question_key(
    question: Question,
    *,
    correlation_data: bytes | None,
    payload: bytes,
    message_id: str | None = None,
) -> str:
    """The question's id in the journal's single id space (the same for every bus).

    A terminal's own id wins; otherwise the bus's message id (NATS `Question-Id` or
    `Nats-Msg-Id` header, when it is a valid identifier); otherwise MQTT 5 correlation data
    (stable across redeliveries); otherwise a hash of the payload, so a redelivered copy still
    collapses onto the original.
    """
    if question.id is not None:
        return question.id
    if message_id is not None and is_identifier(message_id):
        return message_id
    if correlation_data:
        return "c-" + hashlib.sha256(correlation_data).hexdigest()[:32]
    return "h-" + hashlib.sha256(payload).hexdigest()[:32]
