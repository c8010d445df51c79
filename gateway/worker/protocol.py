"""The gateway <-> worker wire protocol: length-prefixed JSON objects on a stream socket.

A frame is a 4-byte big-endian payload length followed by one UTF-8 JSON object. The length is
checked against a hard maximum BEFORE anything is allocated, so a corrupt or hostile peer cannot
make either side reserve gigabytes. The blocking reader can skip an oversized frame in small
chunks and stay in step with the stream (the worker answers it with an error); the asyncio reader
refuses it and the supervisor replaces the worker, because a worker that writes such frames is
broken.

Requests are pydantic models (the worker validates everything it is sent; a malformed request
gets an error reply, never a dead worker). Replies are pydantic models too, discriminated by
`event`, so the supervisor never indexes into an unchecked dict. Every request carries an
integer `id`; every reply to it echoes that id, which lets the supervisor skip the tail of a
reply stream it abandoned (a cancelled caller) instead of mistaking it for the next answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Far above any legitimate frame (a 2,048-token prompt is ~10 KB; 64 embeddings ~130 KB)."""
_DISCARD_CHUNK = 64 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame or message."""


class FrameTooLarge(ProtocolError, ValueError):
    """A frame's declared or encoded size is over the limit; nothing was allocated for it."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class ConnectionClosed(ProtocolError, EOFError):
    """The peer closed the stream (at a frame boundary or in the middle of one)."""


# ---------------------------------------------------------------------------------------------
# Framing


def encode_frame(message: BaseModel | dict[str, Any], *, max_size: int = MAX_FRAME_BYTES) -> bytes:
    """Header + payload of one message.

    Lone surrogates (which JSON input can smuggle into a str) are replaced, not sent: the worker
    would fail on them later, deep inside tokenization. NaN/Infinity are refused (not JSON).
    """
    data = message.model_dump(mode="json") if isinstance(message, BaseModel) else message
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
        "utf-8", errors="replace"
    )
    if len(payload) > max_size:
        raise FrameTooLarge(len(payload), max_size)
    return HEADER.pack(len(payload)) + payload


def decode_payload(payload: bytes) -> dict[str, Any]:
    """The JSON object in a frame's payload; anything else is a ProtocolError."""
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"frame is not UTF-8 JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"frame holds a JSON {type(value).__name__}, not an object")
    return value


async def read_frame(
    reader: asyncio.StreamReader, *, max_size: int = MAX_FRAME_BYTES
) -> dict[str, Any]:
    """Read one frame; raises ConnectionClosed on EOF and FrameTooLarge without reading on."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError as exc:
        raise ConnectionClosed("peer closed the stream") from exc
    (size,) = HEADER.unpack(header)
    if size > max_size:
        raise FrameTooLarge(size, max_size)
    try:
        payload = await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise ConnectionClosed("peer closed the stream inside a frame") from exc
    return decode_payload(payload)


async def write_frame(
    writer: asyncio.StreamWriter,
    message: BaseModel | dict[str, Any],
    *,
    max_size: int = MAX_FRAME_BYTES,
) -> None:
    writer.write(encode_frame(message, max_size=max_size))
    await writer.drain()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    """Blocking read of exactly `size` bytes; ConnectionClosed on EOF."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise ConnectionClosed("peer closed the stream")
        got += n
    return bytes(buf)


def recv_frame(sock: socket.socket, *, max_size: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """Blocking read of one frame (worker side).

    An oversized frame is skipped in small chunks, so the stream stays in step, and then
    reported as FrameTooLarge: the caller answers with an error and reads on.
    """
    (size,) = HEADER.unpack(recv_exactly(sock, HEADER.size))
    if size > max_size:
        remaining = size
        while remaining:
            remaining -= len(recv_exactly(sock, min(remaining, _DISCARD_CHUNK)))
        raise FrameTooLarge(size, max_size)
    return decode_payload(recv_exactly(sock, size))


def send_frame(
    sock: socket.socket, message: BaseModel | dict[str, Any], *, max_size: int = MAX_FRAME_BYTES
) -> None:
    sock.sendall(encode_frame(message, max_size=max_size))


# ---------------------------------------------------------------------------------------------
# Messages


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


RequestId = Annotated[int, Field(ge=0, le=2**53)]
Text = Annotated[str, Field(max_length=1_000_000)]


class ChatMessage(_Message):
    role: Annotated[str, Field(min_length=1, max_length=32)]
    content: Text


class PingRequest(_Message):
    op: Literal["ping"] = "ping"
    id: RequestId


class EmbedRequest(_Message):
    op: Literal["embed"] = "embed"
    id: RequestId
    texts: Annotated[list[Text], Field(max_length=4_096)]


class CountTokensRequest(_Message):
    op: Literal["count_tokens"] = "count_tokens"
    id: RequestId
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=256)]


class GenerateRequest(_Message):
    op: Literal["generate"] = "generate"
    id: RequestId
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=256)]
    max_tokens: Annotated[int, Field(ge=1, le=131_072)]
    temperature: Annotated[float, Field(ge=0.0, le=2.0)]
    stream: bool = False
    stop: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=8)
    ] = []
    repeat_penalty: Annotated[float, Field(ge=1.0, le=2.0)] = 1.0
    stop_on_loop: bool = Field(
        default=False,
        description="Stop generating when the text starts repeating itself (finish_reason loop); "
        "the repeats are cut from the text.",
    )
    json_schema: Annotated[str, Field(min_length=2, max_length=65_536)] | None = Field(
        default=None,
        description="A JSON Schema (as JSON text): sampling is constrained by llama.cpp to output "
        "that parses into it. The worker compiles it to a grammar once and caches it.",
    )
    preemptible: bool = Field(
        default=False,
        description="SIGUSR1 to the worker stops this generation between two tokens "
        "(finish_reason preempted): a routine diagnosis giving way to a waiting question.",
    )


class AllocRequest(_Message):
    """Test only: really touch `mb` MiB, to drive the worker into its memory limit."""

    op: Literal["alloc"] = "alloc"
    id: RequestId
    mb: Annotated[int, Field(ge=1, le=1 << 20)]


class SleepRequest(_Message):
    """Test only: block the worker for `s` seconds, to drive the supervisor into its timeout."""

    op: Literal["sleep"] = "sleep"
    id: RequestId
    s: Annotated[float, Field(ge=0.0, le=3_600.0)]


Request = Annotated[
    PingRequest | EmbedRequest | CountTokensRequest | GenerateRequest | AllocRequest | SleepRequest,
    Field(discriminator="op"),
]
REQUEST_ADAPTER: TypeAdapter[Request] = TypeAdapter(Request)
TEST_OPS = frozenset({"alloc", "sleep"})


class ReadyEvent(_Message):
    """Sent once, unsolicited, when both models are loaded."""

    event: Literal["ready"] = "ready"
    model: str
    embedding_dim: int
    pid: int
    n_ctx: int
    cpu_backend: str = "built-in"
    """The CPU variant library ggml chose for this processor (portable build), or built-in."""


class PongReply(_Message):
    event: Literal["pong"] = "pong"
    id: RequestId
    pid: int


class EmbedReply(_Message):
    """Vectors as base64 of little-endian float32, row after row: ~6x smaller than JSON floats."""

    event: Literal["embeddings"] = "embeddings"
    id: RequestId
    dim: int
    count: int
    data: str


class TokenCountReply(_Message):
    event: Literal["token_count"] = "token_count"
    id: RequestId
    prompt_tokens: int


class TokenEvent(_Message):
    event: Literal["token"] = "token"
    id: RequestId
    text: str


class DoneEvent(_Message):
    """End of a generation. `prompt_eval_tokens` < `prompt_tokens` means a KV prefix was reused."""

    event: Literal["done"] = "done"
    id: RequestId
    text: str
    prompt_tokens: int
    completion_tokens: int
    prompt_ms: float
    generate_ms: float
    prompt_eval_tokens: int | None = None
    finish_reason: Literal["stop", "length", "loop", "preempted"] = "stop"


class ProbeReply(_Message):
    event: Literal["probe"] = "probe"
    id: RequestId
    result: dict[str, Any]


class ErrorReply(_Message):
    """`error` is a stable code: bad_request, test_ops_disabled, context_overflow, llama_error,
    frame_too_large, bad_schema, internal. `id` is null when the request could not be read."""

    event: Literal["error"] = "error"
    id: RequestId | None
    error: str
    message: str
    prompt_tokens: int | None = None
    limit: int | None = None


Reply = Annotated[
    ReadyEvent
    | PongReply
    | EmbedReply
    | TokenCountReply
    | TokenEvent
    | DoneEvent
    | ProbeReply
    | ErrorReply,
    Field(discriminator="event"),
]
REPLY_ADAPTER: TypeAdapter[Reply] = TypeAdapter(Reply)


def parse_reply(frame: dict[str, Any]) -> Reply:
    """A reply frame as its typed model; a ProtocolError if it is none of them."""
    try:
        return REPLY_ADAPTER.validate_python(frame)
    except ValidationError as exc:
        raise ProtocolError(f"invalid reply from the worker: {exc}") from exc
