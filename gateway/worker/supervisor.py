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
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import psutil

from gateway.config import WorkerConfig
from gateway.errors import (
    WorkerCrashed,
    WorkerOOMKilled,
    WorkerTimeout,
    WorkerUnavailable,
)
from gateway.logging import get_logger
from gateway.worker.client import WorkerClient
from gateway.worker.confinement import (
    Confinement,
    ConfinementChoice,
    NoConfinement,
)
from gateway.worker.exits import EXIT_OUT_OF_MEMORY
from gateway.worker.launch import plan_launch
from gateway.worker.process import (
    SpawnSpec,
    StartFailed,
    WorkerProcess,
    describe_exit,
    spawn,
)
from gateway.worker.protocol import (
    ConnectionClosed,
    ErrorReply,
    GenerateRequest,
    ProtocolError,
    Reply,
    Request,
    TokenEvent,
    encode_frame,
)
from gateway.worker.replies import error_from_reply
from gateway.worker.restarts import MAX_BACKOFF_S, RestartBudget, died_of_oom
from models.health import WorkerHealth

log = get_logger(__name__)

SupervisorState = Literal["starting", "ready", "restarting", "failed", "stopped"]
_REAP_TIMEOUT_S = 5.0


class WorkerSupervisor(WorkerClient):
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
        super().__init__(
            request_timeout_s=cfg.request_timeout_s,
            embed_batch=embed_batch,
            model_name=generation_model.name.removesuffix(".gguf"),
            allow_test_ops=allow_test_ops,
        )
        self._cfg = cfg
        self._generation_model = generation_model
        self._embedding_model = embedding_model
        self._instance = instance
        self._confinement_choice: ConfinementChoice = confinement
        self._stop_grace_s = stop_grace_s
        self._python = python

        self._state: SupervisorState = "stopped"
        self._confinement: Confinement = NoConfinement()
        self._spec: SpawnSpec | None = None
        self._worker: WorkerProcess | None = None
        self._lock = asyncio.Lock()
        self._settled = asyncio.Event()  # set whenever the state is not starting/restarting
        self._settled.set()
        self._budget = RestartBudget(
            budget=cfg.restart_budget,
            window_s=cfg.restart_window_s,
            backoff_s=cfg.restart_backoff_s,
        )
        self._restarts = 0
        self._oom_deaths = 0
        self._restart_task: asyncio.Task[None] | None = None
        self._watchers: set[asyncio.Task[None]] = set()

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
        launch = plan_launch(
            self._cfg,
            generation_model=self._generation_model,
            embedding_model=self._embedding_model,
            instance=self._instance,
            python=self._python,
            confinement=self._confinement_choice,
            allow_test_ops=self._allow_test_ops,
        )
        self._confinement, self._spec = launch.confinement, launch.spec
        self._budget.reset()
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
    def current_op(self) -> str | None:
        """The request the worker is busy with (`generate`, `embed`, ...), or None."""
        worker = self._worker
        return worker.op if worker is not None and worker.busy else None

    def preempt(self) -> bool:
        """Stop the generation in progress between two tokens, if it is preemptible (it then
        ends with finish_reason `preempted`). True when it was asked to stop."""
        worker = self._worker
        if worker is None or not (worker.busy and worker.preemptible):
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGUSR1)
            worker.preemptible = False  # once
            return True
        return False

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
            worker.preemptible = isinstance(request, GenerateRequest) and request.preemptible
            worker.op = request.op
            worker.baseline = self._confinement.memory_events()
            try:
                reply = await self._exchange(worker, request, req_id, timeout_s, on_token)
            finally:
                worker.busy = False
                worker.preemptible = False
                worker.op = None
                if worker.returncode is not None and not worker.handled:
                    self._handle_death(worker, during=None)
        if isinstance(reply, ErrorReply):
            raise error_from_reply(reply)
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
        if self._state == "failed" and self._budget.recovery_due(time.monotonic()):
            await self._recover()
        if self._state in ("starting", "restarting"):
            try:
                async with asyncio.timeout(self._cfg.start_timeout_s + MAX_BACKOFF_S):
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
            cpu_backend=worker.ready.cpu_backend,
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
        oom = died_of_oom(
            returncode=code,
            oom_kills=events.oom_kills,
            oom_kills_before=worker.baseline.oom_kills,
            limit_hits=events.limit_hits,
            limit_hits_before=worker.baseline.limit_hits,
            killed_by_us=worker.killed_by_us,
            exit_out_of_memory=EXIT_OUT_OF_MEMORY,
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
        planned = self._budget.next_delay(time.monotonic())
        if planned is None:
            self._enter_failed(reason="restart budget spent")
            return
        attempt, delay = planned
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
        self._budget.fail(time.monotonic())
        self._set_state("failed")
        log.error(
            "worker.degraded",
            reason=reason,
            restarts=self._restarts,
            budget=self._cfg.restart_budget,
            window_s=self._cfg.restart_window_s,
        )

    async def _recover(self) -> None:
        """One new attempt once a whole window has passed since the budget was spent."""
        self._set_state("restarting")
        self._budget.recovering(time.monotonic())
        log.info("worker.restarting", attempt=1, delay_s=0.0, recovery=True)
        try:
            await self._spawn()
        except Exception as exc:
            self._enter_failed(reason=f"recovery attempt failed: {exc}")
        else:
            self._restarts += 1
            self._budget.recovered()

    def _set_state(self, state: SupervisorState) -> None:
        self._state = state
        if state in ("starting", "restarting"):
            self._settled.clear()
        else:
            self._settled.set()
