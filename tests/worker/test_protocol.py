"""Framing and message shapes, without a worker: pure and fast."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from gateway.worker.protocol import (
    HEADER,
    REQUEST_ADAPTER,
    ConnectionClosed,
    DoneEvent,
    ErrorReply,
    FrameTooLarge,
    GenerateRequest,
    ProtocolError,
    TokenEvent,
    decode_payload,
    encode_frame,
    parse_reply,
    read_frame,
    recv_frame,
    send_frame,
    write_frame,
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    yield a, b
    a.close()
    b.close()


def test_blocking_round_trip_keeps_unicode_and_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    messages = [{"id": 1, "op": "ping"}, {"id": 2, "text": "Druck ≥ 5 bar — 圧力 🔧"}]
    for message in messages:
        send_frame(a, message)
    assert [recv_frame(b), recv_frame(b)] == messages


def test_header_is_big_endian_payload_length() -> None:
    frame = encode_frame({"id": 7})
    (size,) = struct.unpack(">I", frame[:4])
    assert size == len(frame) - 4
    assert decode_payload(frame[4:]) == {"id": 7}


def test_model_round_trip_through_reply_parser() -> None:
    done = DoneEvent(
        id=3, text="ok", prompt_tokens=5, completion_tokens=1, prompt_ms=1.0, generate_ms=2.0
    )
    assert parse_reply(decode_payload(encode_frame(done)[4:])) == done


def test_lone_surrogate_is_replaced_not_fatal() -> None:
    payload = decode_payload(encode_frame({"t": "a\ud800b"})[4:])
    assert payload == {"t": "a?b"}


def test_oversize_message_is_refused_when_encoding() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame({"t": "x" * 200}, max_size=100)


def test_oversize_header_is_refused_before_reading_payload(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    # Announce 1 GiB but send nothing: a reader that tried to allocate/read it would block.
    a.sendall(HEADER.pack(1 << 30))

    async def read() -> None:
        reader, writer = await asyncio.open_unix_connection(sock=b)
        try:
            await asyncio.wait_for(read_frame(reader, max_size=1024), timeout=5)
        finally:
            writer.close()

    with pytest.raises(FrameTooLarge) as info:
        asyncio.run(read())
    assert info.value.size == 1 << 30


def test_blocking_reader_skips_oversize_frame_and_stays_in_step(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    a.sendall(encode_frame({"big": "y" * 5000}))
    send_frame(a, {"id": 9})
    with pytest.raises(FrameTooLarge):
        recv_frame(b, max_size=1000)
    assert recv_frame(b, max_size=1000) == {"id": 9}


@pytest.mark.parametrize("payload", [b"[1, 2]", b"\xff\xfe", b"{not json", b"[" * 100_000])
def test_payload_that_is_not_a_json_object_is_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_payload(payload)


def test_eof_is_connection_closed(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(HEADER.pack(10) + b"{")
    a.close()
    with pytest.raises(ConnectionClosed):
        recv_frame(b)


async def test_async_round_trip() -> None:
    a, b = socket.socketpair()
    _ra, wa = await asyncio.open_unix_connection(sock=a)
    rb, wb = await asyncio.open_unix_connection(sock=b)
    try:
        await write_frame(wa, TokenEvent(id=4, text="tok"))
        assert parse_reply(await read_frame(rb)) == TokenEvent(id=4, text="tok")
        wa.close()
        with pytest.raises(ConnectionClosed):
            await read_frame(rb)
    finally:
        wa.close()
        wb.close()


def test_requests_are_validated_strictly() -> None:
    ok = REQUEST_ADAPTER.validate_python(
        {
            "op": "generate",
            "id": 1,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 8,
            "temperature": 0.0,
        }
    )
    assert isinstance(ok, GenerateRequest)
    assert ok.stream is False
    bad = [
        {"op": "nope", "id": 1},
        {"op": "ping"},
        {"op": "ping", "id": -1},
        {"op": "ping", "id": 1, "extra": True},
        {"op": "embed", "id": 1, "texts": "not a list"},
        {"op": "generate", "id": 1, "messages": [], "max_tokens": 8, "temperature": 0.0},
        {
            "op": "generate",
            "id": 1,
            "messages": [{"role": "user"}],
            "max_tokens": 8,
            "temperature": 0,
        },
    ]
    for frame in bad:
        with pytest.raises(ValidationError):
            REQUEST_ADAPTER.validate_python(frame)


def test_error_reply_carries_context_overflow_numbers() -> None:
    reply = parse_reply(
        {
            "event": "error",
            "id": 2,
            "error": "context_overflow",
            "message": "m",
            "prompt_tokens": 3000,
            "limit": 2048,
        }
    )
    assert isinstance(reply, ErrorReply)
    assert (reply.prompt_tokens, reply.limit) == (3000, 2048)
    with pytest.raises(ProtocolError):
        parse_reply({"event": "bogus"})
