"""The worker's request loop: load the models, say `ready`, answer one request at a time.

Imported by `gateway.worker.server` only after the process has confined itself.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from gateway.llama_backends import cpu_variant
from gateway.logging import configure_logging, get_logger
from gateway.worker.engine import ContextOverflowError, Engine, SchemaGrammarError
from gateway.worker.exits import EXIT_PARENT_GONE, EXIT_START_FAILED
from gateway.worker.protocol import (
    REQUEST_ADAPTER,
    TEST_OPS,
    AllocRequest,
    ConnectionClosed,
    CountTokensRequest,
    DoneEvent,
    EmbedReply,
    EmbedRequest,
    ErrorReply,
    FrameTooLarge,
    GenerateRequest,
    PingRequest,
    PongReply,
    ProbeReply,
    ProtocolError,
    ReadyEvent,
    Request,
    SleepRequest,
    TokenCountReply,
    TokenEvent,
    recv_frame,
    send_frame,
)

_PAGE = 4096
log = get_logger(__name__)


def run(sock: socket.socket, args: argparse.Namespace) -> int:
    """Load, announce, serve until EOF. Returns the process exit code."""
    configure_logging(args.log_level, "json")
    started = time.perf_counter()
    try:
        engine = Engine(
            Path(args.model),
            Path(args.embedding_model),
            n_ctx=args.n_ctx,
            n_threads=args.n_threads,
            flash_attn=args.flash_attn,
            kv_cache_type=args.kv_cache_type,
            prefix_reuse=args.prefix_reuse,
        )
    except MemoryError:
        raise
    except Exception as exc:
        # The supervisor sees EOF before `ready`; the reason goes to stderr (journald).
        log.error("worker.load_failed", error=str(exc), error_type=type(exc).__name__)
        return EXIT_START_FAILED
    cpu_backend = cpu_variant() or "built-in"
    log.info(
        "worker.loaded",
        load_ms=round((time.perf_counter() - started) * 1000, 1),
        cpu_backend=cpu_backend,
    )
    try:
        send_frame(
            sock,
            ReadyEvent(
                model=engine.model_name,
                embedding_dim=engine.embedding_dim,
                pid=os.getpid(),
                n_ctx=engine.n_ctx,
                cpu_backend=cpu_backend,
            ),
        )
        Server(sock, engine, allow_test_ops=args.allow_test_ops).serve()
    except OSError:
        pass  # the parent closed its end while we were writing: nobody left to serve
    finally:
        engine.close()
    return EXIT_PARENT_GONE


_FINISH: dict[str, Literal["stop", "length", "loop", "preempted"]] = {
    "stop": "stop",
    "length": "length",
    "loop": "loop",
    "preempted": "preempted",
}


class Server:
    """Reads requests and writes replies until EOF. A bad request never ends the loop."""

    def __init__(self, sock: socket.socket, engine: Engine, *, allow_test_ops: bool) -> None:
        self._sock = sock
        self._engine = engine
        self._allow_test_ops = allow_test_ops
        self._preempt = False
        # The supervisor asks a preemptible generation to stop with SIGUSR1: a signal, not a
        # frame, because the loop reads the socket only between requests. The handler runs
        # between two tokens (llama.cpp's decode returns to Python for each one).
        signal.signal(signal.SIGUSR1, self._on_preempt)

    def _on_preempt(self, signum: int, frame: object) -> None:
        self._preempt = True

    def serve(self) -> None:
        while True:
            try:
                frame = recv_frame(self._sock)
            except ConnectionClosed:
                return
            except FrameTooLarge as exc:
                self._send(ErrorReply(id=None, error="frame_too_large", message=str(exc)))
                continue
            except ProtocolError as exc:
                self._send(ErrorReply(id=None, error="bad_request", message=str(exc)))
                continue
            self._send(self.handle(frame))

    def handle(self, frame: dict[str, Any]) -> BaseModel:
        """The final reply to one request (a stream's token events are sent on the way).

        MemoryError and OSError (the socket is gone) propagate: both end the worker.
        """
        raw_id = frame.get("id")
        req_id = raw_id if type(raw_id) is int and 0 <= raw_id <= 2**53 else None
        if frame.get("op") in TEST_OPS and not self._allow_test_ops:
            return ErrorReply(
                id=req_id, error="test_ops_disabled", message="start with --allow-test-ops"
            )
        try:
            request = REQUEST_ADAPTER.validate_python(frame)
        except ValidationError as exc:
            message = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
            )
            return ErrorReply(id=req_id, error="bad_request", message=message)
        try:
            return self._dispatch(request)
        except (MemoryError, OSError):
            raise
        except Exception as exc:
            log.warning("worker.request_failed", op=request.op, error=repr(exc))
            return ErrorReply(id=request.id, error="llama_error", message=repr(exc)[:2000])

    def _dispatch(self, request: Request) -> BaseModel:
        if isinstance(request, PingRequest):
            return PongReply(id=request.id, pid=os.getpid())
        if isinstance(request, EmbedRequest):
            dim, data = self._engine.embed(request.texts)
            return EmbedReply(
                id=request.id,
                dim=dim,
                count=len(request.texts),
                data=base64.b64encode(data).decode("ascii"),
            )
        if isinstance(request, CountTokensRequest):
            n = len(self._engine.prompt_tokens(request.messages))
            return TokenCountReply(id=request.id, prompt_tokens=n)
        if isinstance(request, GenerateRequest):
            return self._generate(request)
        if isinstance(request, AllocRequest):
            block = bytearray(request.mb * 1024 * 1024)
            for offset in range(0, len(block), _PAGE):  # fault in every page for real
                block[offset] = 1
            del block
            return ProbeReply(id=request.id, result={"allocated_mb": request.mb})
        if isinstance(request, SleepRequest):
            time.sleep(request.s)
            return ProbeReply(id=request.id, result={"slept_s": request.s})
        raise TypeError(f"unhandled request {type(request).__name__}")

    def _generate(self, request: GenerateRequest) -> BaseModel:
        def on_token(text: str) -> None:
            self._send(TokenEvent(id=request.id, text=text))

        def preempted() -> bool:
            return self._preempt

        try:
            return self._generate_with(request, on_token, preempted)
        finally:
            # Cleared after, not before: the supervisor signals only while this request is in
            # flight, possibly before this process has read it. A signal landing after the
            # last check costs at worst one spurious preemption of a later routine request.
            self._preempt = False

    def _generate_with(
        self,
        request: GenerateRequest,
        on_token: Callable[[str], None],
        preempted: Callable[[], bool],
    ) -> BaseModel:
        try:
            result = self._engine.generate(
                request.messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                stop=request.stop,
                on_token=on_token if request.stream else None,
                json_schema=request.json_schema,
                repeat_penalty=request.repeat_penalty,
                stop_on_loop=request.stop_on_loop,
                should_stop=preempted if request.preemptible else None,
            )
        except SchemaGrammarError as exc:
            return ErrorReply(id=request.id, error="bad_schema", message=str(exc)[:2000])
        except ContextOverflowError as exc:
            return ErrorReply(
                id=request.id,
                error="context_overflow",
                message=str(exc),
                prompt_tokens=exc.prompt_tokens,
                limit=exc.limit,
            )
        return DoneEvent(
            id=request.id,
            text=result.text,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            prompt_ms=round(result.prompt_ms, 3),
            generate_ms=round(result.generate_ms, 3),
            prompt_eval_tokens=result.prompt_eval_tokens,
            finish_reason=_FINISH.get(result.finish_reason, "length"),
        )

    def _send(self, message: BaseModel) -> None:
        send_frame(self._sock, message)
