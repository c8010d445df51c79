"""One running worker process: spawn it on a socketpair, read its frames, end it.

Policy (timeouts, restarts, classification) lives in `supervisor`; this module only knows how to
start a worker, wait for its `ready`, and stop it politely then firmly, like nats.py's test
server helper (`create_subprocess_exec`, readiness under a timeout, terminate -> wait -> kill).

A reader task owns the socket's read side and turns frames into typed replies in a queue. That
makes waiting for a reply cancellation-safe: a caller cancelled halfway through a frame cannot
leave the stream out of step, because the caller only ever takes whole replies from the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import gateway
from gateway.worker.confinement import MemoryEvents
from gateway.worker.exits import EXIT_OUT_OF_MEMORY
from gateway.worker.protocol import (
    ConnectionClosed,
    ProtocolError,
    ReadyEvent,
    Reply,
    parse_reply,
    read_frame,
)

_PACKAGE_ROOT = Path(gateway.__file__).resolve().parent.parent
_EOF_GRACE_S = 1.0


@dataclass(frozen=True, slots=True)
class SpawnSpec:
    """Everything needed to start one worker; the same for every restart."""

    argv: Sequence[str]
    env: dict[str, str]
    start_timeout_s: float


class StartFailed(Exception):
    """The worker did not become ready; `timed_out` tells a hang from an early exit."""

    def __init__(self, message: str, *, timed_out: bool, returncode: int | None) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.returncode = returncode


@dataclass(eq=False)
class WorkerProcess:
    """A live worker. `busy` is set while a request owns it; `handled` once its death (or stop)
    has been dealt with, so the exit watcher and the request path never both act on it."""

    proc: asyncio.subprocess.Process
    writer: asyncio.StreamWriter
    replies: asyncio.Queue[Reply | BaseException]
    reader_task: asyncio.Task[None]
    ready: ReadyEvent
    load_ms: float
    baseline: MemoryEvents = field(default_factory=MemoryEvents)
    busy: bool = False
    preemptible: bool = False
    """The request in progress is a generation that may be stopped (SIGUSR1)."""
    op: str | None = None
    handled: bool = False
    killed_by_us: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def kill(self) -> None:
        self.killed_by_us = True
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    async def reap(self, limit_s: float) -> int:
        """Wait for the exit (the socket's EOF can come first); SIGKILL after `limit_s`."""
        try:
            async with asyncio.timeout(limit_s):
                return await self.proc.wait()
        except TimeoutError:
            self.kill()
            return await self.proc.wait()

    async def terminate(self, grace_s: float) -> int:
        """Close our end (the worker exits on EOF), then SIGTERM, then SIGKILL."""
        self.close_socket()
        if self.proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(_EOF_GRACE_S, grace_s)):
                    await self.proc.wait()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await self.proc.wait()
        if self.proc.returncode is None:
            self.kill()
        code = await self.proc.wait()
        await self.stop_reader()
        return code

    def close_socket(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()

    async def stop_reader(self) -> None:
        self.close_socket()
        self.reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader_task


@dataclass(frozen=True, slots=True)
class ThreadPlan:
    threads: int
    cores: int
    """CPUs the worker may use: its affinity, lowered by a CPU quota."""
    clamped: bool
    """The configured thread count was above `cores` and was lowered to it."""


def plan_threads(n_threads: int, cpu_quota_percent: int) -> ThreadPlan:
    """Inference threads that never oversubscribe the CPUs the worker may run on.

    One worker serves one request at a time (the supervisor's lock), so workers x threads <=
    cores holds when threads <= cores. More threads than cores, or than a CPU quota allows
    (`cpu_quota_percent` 100 = one core), only make llama.cpp's threads wait for each other
    at every synchronisation point. 0 means all of them.
    """
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = max(1, os.cpu_count() or 1)
    if cpu_quota_percent > 0:
        cores = min(cores, max(1, cpu_quota_percent // 100))
    if n_threads <= 0:
        return ThreadPlan(cores, cores, clamped=False)
    return ThreadPlan(min(n_threads, cores), cores, clamped=n_threads > cores)


def build_argv(
    *,
    python: str,
    model: Path,
    embedding_model: Path,
    n_ctx: int,
    n_threads: int,
    flash_attn: bool,
    allow_test_ops: bool,
    kv_cache_type: str = "f16",
    prefix_reuse: bool = True,
    confinement_args: Sequence[str],
) -> list[str]:
    """The worker's command line, without `--fd` (added per spawn)."""
    argv = [
        python,
        "-m",
        "gateway.worker.server",
        "--model",
        str(model),
        "--embedding-model",
        str(embedding_model),
        "--n-ctx",
        str(n_ctx),
        "--n-threads",
        str(n_threads),
        "--flash-attn" if flash_attn else "--no-flash-attn",
        "--kv-cache-type",
        kv_cache_type,
        "--prefix-reuse" if prefix_reuse else "--no-prefix-reuse",
        "--parent-pid",
        str(os.getpid()),
        *confinement_args,
    ]
    if allow_test_ops:
        argv.append("--allow-test-ops")
    return argv


def worker_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment, with this source tree importable by the child even when not installed.

    OMP_WAIT_POLICY=PASSIVE (unless the operator set a policy): llama.cpp's CPU backend is built
    with OpenMP, whose threads spin between graph nodes. When anything else wants a core (the
    gateway, the broker, another process on a small box), spinning threads and preempted ones
    wait for each other: decode measured here fell from ~40 to 0.3-3 tokens/s with 2 threads on
    2 busy cores. Sleeping waits keep the worker usable under load.
    """
    env = dict(os.environ)
    paths = [str(_PACKAGE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(name, None)  # systemd's notify channel is the gateway's alone
    env.update(extra)
    return env


async def spawn(spec: SpawnSpec) -> WorkerProcess:
    """Start a worker and wait for its `ready` frame; StartFailed if it exits or hangs."""
    started = time.perf_counter()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        fd = theirs.fileno()
        proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            "--fd",
            str(fd),
            pass_fds=(fd,),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=2,  # our stderr: nothing the worker prints may corrupt the gateway's stdout
            env=spec.env,
        )
    except OSError as exc:
        ours.close()
        message = f"cannot run {spec.argv[0]}: {exc}"
        raise StartFailed(message, timed_out=False, returncode=None) from exc
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    try:
        async with asyncio.timeout(spec.start_timeout_s):
            first = parse_reply(await read_frame(reader))
        if not isinstance(first, ReadyEvent):
            raise ProtocolError(f"expected a ready event, got {first.event}")
    except BaseException as exc:
        writer.close()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        code = await proc.wait()
        if isinstance(exc, TimeoutError):
            raise StartFailed(
                f"worker did not become ready within {spec.start_timeout_s} s",
                timed_out=True,
                returncode=code,
            ) from exc
        if isinstance(exc, ProtocolError):
            raise StartFailed(
                f"worker failed to start ({describe_exit(code)}): {exc}",
                timed_out=False,
                returncode=code,
            ) from exc
        raise
    queue: asyncio.Queue[Reply | BaseException] = asyncio.Queue()
    task = asyncio.create_task(_read_replies(reader, queue), name=f"worker-reader-{proc.pid}")
    return WorkerProcess(
        proc=proc,
        writer=writer,
        replies=queue,
        reader_task=task,
        ready=first,
        load_ms=(time.perf_counter() - started) * 1000.0,
    )


async def _read_replies(
    reader: asyncio.StreamReader, queue: asyncio.Queue[Reply | BaseException]
) -> None:
    """Move whole replies into the queue; the last item is the exception that ended the stream."""
    while True:
        try:
            reply = parse_reply(await read_frame(reader))
        except (ProtocolError, OSError) as exc:
            queue.put_nowait(exc if isinstance(exc, ProtocolError) else ConnectionClosed(str(exc)))
            return
        queue.put_nowait(reply)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == EXIT_OUT_OF_MEMORY:
        return f"exit code {code} (out of memory)"
    return f"exit code {code}"
