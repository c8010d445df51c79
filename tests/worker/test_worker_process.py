"""The worker program itself, spoken to over raw frames: robustness and lifetime."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio

from gateway.worker.process import SpawnSpec, WorkerProcess, build_argv, spawn, worker_env
from gateway.worker.protocol import HEADER, MAX_FRAME_BYTES, ErrorReply, PongReply, encode_frame
from tests.worker.conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def spec(generation_gguf: Path, embedding_gguf: Path, *, allow_test_ops: bool) -> SpawnSpec:
    argv = build_argv(
        python=sys.executable,
        model=generation_gguf,
        embedding_model=embedding_gguf,
        n_ctx=512,
        n_threads=1,
        flash_attn=True,
        allow_test_ops=allow_test_ops,
        confinement_args=[],
    )
    return SpawnSpec(argv=argv, env=worker_env({}), start_timeout_s=60)


@pytest_asyncio.fixture
async def raw_worker(generation_gguf: Path, embedding_gguf: Path) -> AsyncIterator[WorkerProcess]:
    worker = await spawn(spec(generation_gguf, embedding_gguf, allow_test_ops=False))
    yield worker
    await worker.terminate(5.0)


async def exchange(worker: WorkerProcess, data: bytes) -> Any:
    worker.writer.write(data)
    await worker.writer.drain()
    async with asyncio.timeout(30):
        return await worker.replies.get()


def frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


async def test_ready_event_describes_the_worker(raw_worker: WorkerProcess) -> None:
    assert raw_worker.ready.pid == raw_worker.pid
    assert raw_worker.ready.embedding_dim == 384
    assert raw_worker.ready.n_ctx == 512
    assert raw_worker.ready.model == "SmolLM2-135M-Instruct.Q4_1"


@pytest.mark.parametrize(
    ("data", "code", "reply_id"),
    [
        (frame(b"{not json"), "bad_request", None),
        (frame(b"[1, 2, 3]"), "bad_request", None),
        (frame(b"\xff\xfe\xfd"), "bad_request", None),
        (frame(json.dumps({"op": "fly", "id": 5}).encode()), "bad_request", 5),
        (frame(json.dumps({"op": "ping", "id": "x"}).encode()), "bad_request", None),
        (frame(json.dumps({"op": "generate", "id": 6}).encode()), "bad_request", 6),
        (frame(json.dumps({"op": "embed", "id": 7, "texts": [1, 2]}).encode()), "bad_request", 7),
        (frame(json.dumps({"op": "alloc", "id": 8, "mb": 64}).encode()), "test_ops_disabled", 8),
        (frame(json.dumps({"op": "sleep", "id": 9, "s": 60}).encode()), "test_ops_disabled", 9),
    ],
)
async def test_malformed_or_forbidden_requests_get_errors_not_a_dead_worker(
    raw_worker: WorkerProcess, data: bytes, code: str, reply_id: int | None
) -> None:
    reply = await exchange(raw_worker, data)
    assert isinstance(reply, ErrorReply)
    assert (reply.error, reply.id) == (code, reply_id)
    pong = await exchange(raw_worker, encode_frame({"op": "ping", "id": 99}))
    assert isinstance(pong, PongReply)
    assert pong.pid == raw_worker.pid


async def test_oversize_frame_is_skipped_and_answered(raw_worker: WorkerProcess) -> None:
    size = MAX_FRAME_BYTES + 1
    reply = await exchange(raw_worker, HEADER.pack(size) + b" " * size)
    assert isinstance(reply, ErrorReply)
    assert reply.error == "frame_too_large"
    pong = await exchange(raw_worker, encode_frame({"op": "ping", "id": 1}))
    assert isinstance(pong, PongReply)


async def test_worker_exits_when_the_socket_closes(raw_worker: WorkerProcess) -> None:
    raw_worker.close_socket()
    async with asyncio.timeout(30):
        assert await raw_worker.proc.wait() == 0


PARENT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from gateway.config import WorkerConfig
    from gateway.logging import configure_logging
    from gateway.worker.supervisor import WorkerSupervisor

    async def main() -> None:
        configure_logging("warning", "json")  # stderr; stdout carries the pid
        sup = WorkerSupervisor(
            WorkerConfig(n_threads=1, n_ctx=512), generation_model=Path(sys.argv[1]),
            embedding_model=Path(sys.argv[2]), instance="orphan", confinement="none",
        )
        await sup.start()
        print(sup.pid, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_worker_does_not_outlive_a_killed_gateway(
    generation_gguf: Path, embedding_gguf: Path
) -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PARENT,
        str(generation_gguf),
        str(embedding_gguf),
        stdout=asyncio.subprocess.PIPE,
        env=worker_env({}),
    )
    try:
        assert parent.stdout is not None
        async with asyncio.timeout(60):
            worker_pid = int(await parent.stdout.readline())
        child = psutil.Process(worker_pid)
        assert child.ppid() == parent.pid
    finally:
        os.kill(parent.pid, signal.SIGKILL)
        await parent.wait()

    def gone() -> bool:
        try:
            return bool(child.status() == psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return True

    await wait_until(gone, timeout_s=10)
