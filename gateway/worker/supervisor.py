"""WorkerSupervisor: the gateway's only handle on the confined model worker.

Policy in one place:
- one request in flight (an asyncio.Lock): one `Llama` object, no batching, and a reply stream
  that belongs to exactly one caller;
- every request has a deadline; past it the worker is SIGKILLed (it may be wedged inside
  llama.cpp, where nothing else reaches it), the caller gets WorkerTimeout, and a new worker is
  started in the background;
- a worker that dies (during a request, or idle: an exit watcher notices) is classified from the
  kernel's OOM counter of its cgroup and its exit status, then restarted with exponential
  backoff; at most `restart_budget` restarts per `restart_window_s` (Frigate's watchdog rule),
  after which the supervisor is `failed`/`degraded` and calls raise WorkerUnavailable at once, so
  the gateway answers with fallbacks instead of queueing behind a crash loop. Once a whole
  window has passed, the next call makes one new attempt.
Nothing here blocks the event loop: inference runs in the other process, the socket is asyncio,
and the only synchronous I/O is reading a few small cgroup and /proc files.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import psutil
from pydantic import BaseModel, ValidationError

from gateway.config import WorkerConfig
from gateway.errors import (
    ContextOverflow,
    ModelNotFound,
    WorkerCrashed,
    WorkerError,
    WorkerOOMKilled,
    WorkerTimeout,
    WorkerUnavailable,
)
from gateway.logging import get_logger
from gateway.worker.confinement import (
    Confinement,
    ConfinementChoice,
    Limits,
    NoConfinement,
    create_confinement,
)
from gateway.worker.exits import EXIT_OUT_OF_MEMORY
from gateway.worker.process import (
    SpawnSpec,
    StartFailed,
    WorkerProcess,
    build_argv,
    describe_exit,
    plan_threads,
    spawn,
    worker_env,
)
from gateway.worker.protocol import (
    REQUEST_ADAPTER,
    ChatMessage,
    ConnectionClosed,
    CountTokensRequest,
    DoneEvent,
    EmbedReply,
    EmbedRequest,
    ErrorReply,
    GenerateRequest,
    PingRequest,
    PongReply,
    ProbeReply,
    ProtocolError,
    Reply,
    Request,
    TokenCountReply,
    TokenEvent,
    encode_frame,
)
from models.health import WorkerHealth

log = get_logger(__name__)

SupervisorState = Literal["starting", "ready", "restarting", "failed", "stopped"]
_MAX_BACKOFF_S = 30.0
_REAP_TIMEOUT_S = 5.0
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
    finish_reason: Literal["stop", "length"] = "stop"


class WorkerSupervisor:
    def __init__(
        self,
        cfg: WorkerConfig,
        *,
        generation_model: Path,
        embedding_model: Path,
        instance: str,
        allow_test_ops: bool = False,
        confinement: ConfinementChoice = "auto",
        stop_grace_s: float = 5.0,
        embed_batch: int = 64,
        python: str = sys.executable,
    ) -> None:
        self._cfg = cfg
        self._generation_model = generation_model
        self._embedding_model = embedding_model
        self._instance = instance
        self._allow_test_ops = allow_test_ops
        self._confinement_choice: ConfinementChoice = confinement
        self._stop_grace_s = stop_grace_s
        self._embed_batch = max(1, embed_batch)
        self._python = python

        self._state: SupervisorState = "stopped"
        self._confinement: Confinement = NoConfinement()
        self._spec: SpawnSpec | None = None
        self._worker: WorkerProcess | None = None
        self._lock = asyncio.Lock()
        self._settled = asyncio.Event()  # set whenever the state is not starting/restarting
        self._settled.set()
        self._ids = itertools.count(1)
        self._restart_times: list[float] = []
        self._restarts = 0
        self._oom_deaths = 0
        self._failed_at: float | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self._model_name = generation_model.name.removesuffix(".gguf")

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def state(self) -> SupervisorState:
        return self._state

    @property
    def degraded(self) -> bool:
        """The restart budget is spent; calls fail fast until a window has passed."""
        return self._state == "failed"

    async def start(self) -> None:
        """Confine, spawn, and wait for `ready` (WorkerUnavailable if it does not come)."""
        if self._state != "stopped":
            raise RuntimeError(f"supervisor is {self._state}, not stopped")
        for path in (self._generation_model, self._embedding_model):
            if not path.is_file():
                raise ModelNotFound(f"model file {path} does not exist")
        plan = plan_threads(self._cfg.n_threads, self._cfg.cpu_quota_percent)
        if plan.clamped:
            log.warning(
                "worker.threads_clamped",
                configured=self._cfg.n_threads,
                threads=plan.threads,
                cores=plan.cores,
                hint="more threads than usable cores only slow llama.cpp down",
            )
        self._confinement = create_confinement(
            Limits.from_config(self._cfg),
            instance=self._instance,
            cgroup_parent=self._cfg.cgroup_parent,
            choice=self._confinement_choice,
        )
        self._spec = SpawnSpec(
            argv=build_argv(
                python=self._python,
                model=self._generation_model,
                embedding_model=self._embedding_model,
                n_ctx=self._cfg.n_ctx,
                n_threads=plan.threads,
                flash_attn=self._cfg.flash_attn,
                prefix_reuse=self._cfg.prefix_reuse,
                allow_test_ops=self._allow_test_ops,
                confinement_args=self._confinement.child_args(),
            ),
            env=worker_env(self._confinement.child_env()),
            start_timeout_s=self._cfg.start_timeout_s,
        )
        self._restart_times.clear()
        self._set_state("starting")
        try:
            await self._spawn()
        except StartFailed as exc:
            self._enter_failed(reason=str(exc))
            raise WorkerUnavailable(f"model worker did not start: {exc}") from exc

    async def stop(self) -> None:
        """Close the socket, SIGTERM, wait, SIGKILL; remove the cgroup. Idempotent."""
        self._set_state("stopped")
        if self._restart_task is not None:
            self._restart_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restart_task
            self._restart_task = None
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.handled = True
            await worker.terminate(self._stop_grace_s)
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        self._confinement.close()

    # -- requests ---------------------------------------------------------------------------

    async def ping(self) -> int:
        """The worker's pid, after a round trip."""
        reply = await self._call(PingRequest(id=self._next_id()), timeout_s=self._timeout(None))
        return _expect(reply, PongReply).pid

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """L2-normalised vectors, one per text, sent in batches (each its own deadline)."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._embed_batch):
            batch = list(texts[start : start + self._embed_batch])
            request = EmbedRequest(id=self._next_id(), texts=batch)
            reply = _expect(await self._call(request, timeout_s=self._timeout(None)), EmbedReply)
            raw = base64.b64decode(reply.data)
            matrix = np.frombuffer(raw, dtype="<f4").reshape(reply.count, reply.dim)
            vectors.extend(matrix.astype(np.float64).tolist())
        return vectors

    async def count_tokens(self, messages: Sequence[Mapping[str, str]]) -> int:
        """Prompt tokens of `messages` after the model's chat template: what generate() uses."""
        request = CountTokensRequest(id=self._next_id(), messages=_chat(messages))
        reply = await self._call(request, timeout_s=self._timeout(None))
        return _expect(reply, TokenCountReply).prompt_tokens

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
    ) -> Generation:
        """Generate a reply. With `on_token`, text arrives as it is produced (concatenated, it
        equals the final text). ContextOverflow if prompt + max_tokens exceed the context.
        With `json_schema` (JSON text), the output is constrained to that schema by a grammar."""
        request = GenerateRequest(
            id=self._next_id(),
            messages=_chat(messages),
            max_tokens=max_tokens,
            temperature=temperature,
            stream=on_token is not None,
            stop=list(stop),
            json_schema=json_schema,
        )
        reply = await self._call(request, timeout_s=self._timeout(timeout_s), on_token=on_token)
        done = _expect(reply, DoneEvent)
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
        return _expect(reply, ProbeReply).result

    # -- health -----------------------------------------------------------------------------

    def health(self) -> WorkerHealth:
        worker = self._worker
        pid = worker.pid if worker is not None and worker.returncode is None else None
        rss: int | None = None
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                rss = int(psutil.Process(pid).memory_info().rss)
        return WorkerHealth(
            state=self._state,
            pid=pid,
            rss_bytes=rss,
            confinement=self._confinement.mode,
            memory_limit_bytes=self._confinement.memory_limit_bytes(pid),
            restarts=self._restarts,
            oom_kills=self.oom_kills,
            model=self._model_name,
        )

    @property
    def oom_kills(self) -> int:
        """Kernel OOM kills in the worker's cgroup, or deaths classified as OOM if higher
        (RLIMIT_AS overruns have no kernel counter)."""
        return max(self._confinement.memory_events().oom_kills, self._oom_deaths)

    @property
    def confinement(self) -> Confinement:
        return self._confinement

    @property
    def pid(self) -> int | None:
        return self._worker.pid if self._worker is not None else None

    # -- internals: one exchange ------------------------------------------------------------

    async def _call(
        self,
        request: Request,
        *,
        timeout_s: float,
        on_token: Callable[[str], None] | None = None,
    ) -> Reply:
        req_id = request.id
        async with self._lock:
            worker = await self._ready_worker()
            worker.busy = True
            worker.baseline = self._confinement.memory_events()
            try:
                reply = await self._exchange(worker, request, req_id, timeout_s, on_token)
            finally:
                worker.busy = False
                if worker.returncode is not None and not worker.handled:
                    self._handle_death(worker, during=None)
        if isinstance(reply, ErrorReply):
            raise _error_from_reply(reply)
        return reply

    async def _exchange(
        self,
        worker: WorkerProcess,
        request: Request,
        req_id: int,
        timeout_s: float,
        on_token: Callable[[str], None] | None,
    ) -> Reply:
        op = request.op
        try:
            async with asyncio.timeout(timeout_s):
                worker.writer.write(encode_frame(request))
                await worker.writer.drain()
                while True:
                    item = await worker.replies.get()
                    if isinstance(item, BaseException):
                        raise item
                    if isinstance(item, TokenEvent):
                        if item.id == req_id and on_token is not None:
                            on_token(item.text)
                        continue
                    item_id = getattr(item, "id", None)
                    if item_id == req_id or (item_id is None and isinstance(item, ErrorReply)):
                        return item
                    # else: the tail of a reply stream whose caller was cancelled
        except TimeoutError:
            worker.kill()
            log.warning("worker.timeout", pid=worker.pid, op=op, timeout_s=timeout_s)
            await worker.reap(_REAP_TIMEOUT_S)
            self._retire(worker)
            self._schedule_restart()
            raise WorkerTimeout(
                f"the model worker did not answer {op} within {timeout_s:g} s; it was replaced"
            ) from None
        except (ConnectionClosed, ConnectionError) as exc:
            if self._state == "stopped":
                raise WorkerUnavailable("the model worker was stopped") from exc
            await worker.reap(_REAP_TIMEOUT_S)
            raise self._handle_death(worker, during=op) from None
        except ProtocolError as exc:
            worker.kill()
            await worker.reap(_REAP_TIMEOUT_S)
            self._retire(worker)
            log.error("worker.crashed", pid=worker.pid, op=op, reason=f"protocol error: {exc}")
            self._schedule_restart()
            raise WorkerCrashed(f"the model worker broke the protocol: {exc}") from exc

    async def _ready_worker(self) -> WorkerProcess:
        """The live worker, waiting out a restart; WorkerUnavailable when there is none."""
        if self._state == "failed" and self._recovery_due():
            await self._recover()
        if self._state in ("starting", "restarting"):
            try:
                async with asyncio.timeout(self._cfg.start_timeout_s + _MAX_BACKOFF_S):
                    await self._settled.wait()
            except TimeoutError:
                raise WorkerUnavailable("the model worker is still restarting") from None
        if self._state == "failed":
            raise WorkerUnavailable(
                f"the model worker's restart budget ({self._cfg.restart_budget} per "
                f"{self._cfg.restart_window_s:g} s) is spent"
            )
        worker = self._worker
        if self._state != "ready" or worker is None:
            raise WorkerUnavailable(f"the model worker is {self._state}")
        return worker

    # -- internals: deaths and restarts -----------------------------------------------------

    async def _spawn(self) -> WorkerProcess:
        assert self._spec is not None
        worker = await spawn(self._spec)
        worker.baseline = self._confinement.memory_events()
        self._worker = worker
        self._set_state("ready")
        watcher = asyncio.create_task(self._watch(worker), name=f"worker-watch-{worker.pid}")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        log.info(
            "worker.started",
            pid=worker.pid,
            load_ms=round(worker.load_ms, 1),
            confinement=self._confinement.describe(),
            memory_limit_bytes=self._confinement.memory_limit_bytes(worker.pid),
            model=worker.ready.model,
            embedding_dim=worker.ready.embedding_dim,
        )
        return worker

    async def _watch(self, worker: WorkerProcess) -> None:
        """Notice a death while idle (a request in flight handles its own)."""
        await worker.proc.wait()
        if not worker.busy and not worker.handled and self._state != "stopped":
            self._handle_death(worker, during=None)

    def _handle_death(self, worker: WorkerProcess, *, during: str | None) -> WorkerCrashed:
        """Classify an exit, log it, schedule the restart; return the error for the caller."""
        self._retire(worker)
        code = worker.returncode
        events = self._confinement.memory_events()
        oom = (
            events.oom_kills > worker.baseline.oom_kills
            or code == EXIT_OUT_OF_MEMORY
            or (
                code == -signal.SIGKILL
                and not worker.killed_by_us
                and events.limit_hits > worker.baseline.limit_hits
            )
        )
        how = describe_exit(code)
        error: WorkerCrashed
        if oom:
            self._oom_deaths += 1
            log.error(
                "worker.oom_killed",
                pid=worker.pid,
                op=during,
                exit=how,
                memory_limit_bytes=self._confinement.memory_limit_bytes(None),
                oom_kills=events.oom_kills,
            )
            error = WorkerOOMKilled(f"the model worker ran out of memory ({how})")
        else:
            log.error("worker.crashed", pid=worker.pid, op=during, exit=how, returncode=code)
            error = WorkerCrashed(f"the model worker died ({how})")
        self._schedule_restart()
        return error

    def _retire(self, worker: WorkerProcess) -> None:
        worker.handled = True
        worker.close_socket()
        if self._worker is worker:
            self._worker = None
        task = asyncio.get_running_loop().create_task(worker.stop_reader())
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _schedule_restart(self) -> None:
        if self._state == "stopped":
            return
        now = time.monotonic()
        window = self._cfg.restart_window_s
        self._restart_times = [t for t in self._restart_times if now - t < window]
        if len(self._restart_times) >= self._cfg.restart_budget:
            self._enter_failed(reason="restart budget spent")
            return
        self._restart_times.append(now)
        attempt = len(self._restart_times)
        delay = min(self._cfg.restart_backoff_s * 2 ** (attempt - 1), _MAX_BACKOFF_S)
        self._set_state("restarting")
        log.info(
            "worker.restarting", attempt=attempt, delay_s=delay, budget=self._cfg.restart_budget
        )
        self._restart_task = asyncio.get_running_loop().create_task(
            self._restart_after(delay), name="worker-restart"
        )

    async def _restart_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._state == "stopped":
            return
        try:
            await self._spawn()
        except Exception as exc:  # StartFailed, or anything unforeseen: never leave "restarting"
            log.error("worker.crashed", pid=None, op="start", reason=str(exc))
            self._schedule_restart()
        else:
            self._restarts += 1

    def _enter_failed(self, *, reason: str) -> None:
        self._failed_at = time.monotonic()
        self._set_state("failed")
        log.error(
            "worker.degraded",
            reason=reason,
            restarts=self._restarts,
            budget=self._cfg.restart_budget,
            window_s=self._cfg.restart_window_s,
        )

    def _recovery_due(self) -> bool:
        return (
            self._failed_at is not None
            and time.monotonic() - self._failed_at >= self._cfg.restart_window_s
        )

    async def _recover(self) -> None:
        """One new attempt once a whole window has passed since the budget was spent."""
        self._set_state("restarting")
        self._restart_times = [time.monotonic()]
        log.info("worker.restarting", attempt=1, delay_s=0.0, recovery=True)
        try:
            await self._spawn()
        except Exception as exc:
            self._enter_failed(reason=f"recovery attempt failed: {exc}")
        else:
            self._restarts += 1
            self._failed_at = None

    def _set_state(self, state: SupervisorState) -> None:
        self._state = state
        if state in ("starting", "restarting"):
            self._settled.clear()
        else:
            self._settled.set()

    def _next_id(self) -> int:
        return next(self._ids)

    def _timeout(self, override: float | None) -> float:
        return override if override is not None else self._cfg.request_timeout_s


def _chat(messages: Sequence[Mapping[str, str]]) -> list[ChatMessage]:
    try:
        return [ChatMessage(role=m["role"], content=m["content"]) for m in messages]
    except (KeyError, ValidationError) as exc:
        raise ValueError(f"messages must be {{role, content}} mappings: {exc}") from exc


def _expect(reply: Reply, kind: type[_R]) -> _R:
    if not isinstance(reply, kind):
        raise WorkerError(f"unexpected reply {reply.event!r} from the model worker")
    return reply


def _error_from_reply(reply: ErrorReply) -> Exception:
    if reply.error == "context_overflow":
        return ContextOverflow(
            reply.message, prompt_tokens=reply.prompt_tokens or 0, limit=reply.limit or 0
        )
    return WorkerError(f"model worker refused the request ({reply.error}): {reply.message}")
