"""The request API of the model worker: ping, embed, count tokens, generate, test ops.

Each request is one frame out and a reply (or a token stream then a reply) back; how that
exchange is carried out, and what happens when the worker dies or stalls during it, is the
supervisor's business (gateway/worker/supervisor.py implements `_call`).
"""

from __future__ import annotations

import base64
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import ValidationError

from gateway.worker.protocol import (
    REQUEST_ADAPTER,
    CountTokensRequest,
    DoneEvent,
    EmbedReply,
    EmbedRequest,
    GenerateRequest,
    PingRequest,
    PongReply,
    ProbeReply,
    Reply,
    Request,
    TokenCountReply,
)
from gateway.worker.replies import Generation, chat, expect


class WorkerClient(ABC):
    def __init__(
        self, *, request_timeout_s: float, embed_batch: int, model_name: str, allow_test_ops: bool
    ) -> None:
        self._request_timeout_s = request_timeout_s
        self._embed_batch = max(1, embed_batch)
        self._model_name = model_name
        self._allow_test_ops = allow_test_ops
        self._ids = itertools.count(1)

    @abstractmethod
    async def _call(
        self,
        request: Request,
        *,
        timeout_s: float,
        on_token: Callable[[str], None] | None = None,
    ) -> Reply:
        """Send one request, return its final reply; error replies raise."""

    async def ping(self) -> int:
        """The worker's pid, after a round trip."""
        reply = await self._call(PingRequest(id=self._next_id()), timeout_s=self._timeout(None))
        return expect(reply, PongReply).pid

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalised vectors, one per text, sent in batches (each its own deadline)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._embed_batch):
            batch = list(texts[start : start + self._embed_batch])
            request = EmbedRequest(id=self._next_id(), texts=batch)
            reply = expect(await self._call(request, timeout_s=self._timeout(None)), EmbedReply)
            raw = base64.b64decode(reply.data)
            matrix = np.frombuffer(raw, dtype="<f4").reshape(reply.count, reply.dim)
            vectors.extend(matrix.astype(np.float64).tolist())
        return vectors

    async def count_tokens(self, messages: Sequence[Mapping[str, str]]) -> int:
        """Prompt tokens of `messages` after the model's chat template: what generate() uses."""
        request = CountTokensRequest(id=self._next_id(), messages=chat(messages))
        reply = await self._call(request, timeout_s=self._timeout(None))
        return expect(reply, TokenCountReply).prompt_tokens

    async def generate(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        on_token: Callable[[str], None] | None = None,
        stop: Sequence[str] = (),
        timeout_s: float | None = None,
        json_schema: str | None = None,
        repeat_penalty: float = 1.0,
        stop_on_loop: bool = False,
        preemptible: bool = False,
    ) -> Generation:
        """Generate a reply. With `on_token`, text arrives as it is produced (concatenated, it
        equals the final text). ContextOverflow if prompt + max_tokens exceed the context.
        With `json_schema` (JSON text), the output is constrained to that schema by a grammar."""
        request = GenerateRequest(
            id=self._next_id(),
            messages=chat(messages),
            max_tokens=max_tokens,
            temperature=temperature,
            stream=on_token is not None,
            stop=list(stop),
            json_schema=json_schema,
            repeat_penalty=repeat_penalty,
            stop_on_loop=stop_on_loop,
            preemptible=preemptible,
        )
        reply = await self._call(request, timeout_s=self._timeout(timeout_s), on_token=on_token)
        done = expect(reply, DoneEvent)
        return Generation(
            text=done.text,
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
            prompt_ms=done.prompt_ms,
            generate_ms=done.generate_ms,
            model=self._model_name,
            prompt_eval_tokens=done.prompt_eval_tokens,
            finish_reason=done.finish_reason,
        )

    async def call_test_op(self, op: str, **args: Any) -> dict[str, Any]:
        """Run a test-only op (`alloc`, `sleep`); needs allow_test_ops=True."""
        if not self._allow_test_ops:
            raise PermissionError("test ops need WorkerSupervisor(..., allow_test_ops=True)")
        timeout = args.pop("timeout_s", None)
        try:
            request = REQUEST_ADAPTER.validate_python({"op": op, "id": self._next_id(), **args})
        except ValidationError as exc:
            raise ValueError(f"invalid test op {op!r}: {exc}") from exc
        reply = await self._call(request, timeout_s=self._timeout(timeout))
        return expect(reply, ProbeReply).result

    def _next_id(self) -> int:
        return next(self._ids)

    def _timeout(self, override: float | None) -> float:
        return override if override is not None else self._request_timeout_s
