"""Turning the worker's replies into what callers get: a Generation, or a typed error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.errors import ContextOverflow, WorkerError
from gateway.worker.protocol import ChatMessage, ErrorReply, Reply

_R = TypeVar("_R", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    prompt_ms: float
    generate_ms: float
    model: str
    prompt_eval_tokens: int | None = None
    """Prompt tokens actually evaluated; fewer than prompt_tokens when a KV prefix was reused."""
    finish_reason: Literal["stop", "length", "loop", "preempted"] = "stop"


def chat(messages: Sequence[Mapping[str, str]]) -> list[ChatMessage]:
    try:
        return [ChatMessage(role=m["role"], content=m["content"]) for m in messages]
    except (KeyError, ValidationError) as exc:
        raise ValueError(f"messages must be {{role, content}} mappings: {exc}") from exc


def expect(reply: Reply, kind: type[_R]) -> _R:
    if not isinstance(reply, kind):
        raise WorkerError(f"unexpected reply {reply.event!r} from the model worker")
    return reply


def error_from_reply(reply: ErrorReply) -> Exception:
    if reply.error == "context_overflow":
        return ContextOverflow(
            reply.message, prompt_tokens=reply.prompt_tokens or 0, limit=reply.limit or 0
        )
    return WorkerError(f"model worker refused the request ({reply.error}): {reply.message}")
