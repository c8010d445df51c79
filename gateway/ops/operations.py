"""Unattended operation, wired into `Gateway.run` with a few lines: systemd notifications and
watchdog, the Prometheus endpoint, and the signals (TERM/INT stop, HUP reload).

Kept out of app.py on purpose: the composition root stays about building the gateway, and this
module only observes it (its `phase` is computed from the live objects, so app.py does not have
to report every step).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.config import Settings
from gateway.logging import get_logger
from gateway.ops.reload import reload_settings
from gateway.ops.sdnotify import Phase, SystemdAgent

if TYPE_CHECKING:
    from gateway.ops.prometheus import MetricsServer
    from gateway.ops.view import GatewayView

log = get_logger(__name__)

TEST_STALL_S = 3.0
"""How long SIGUSR2 blocks the event loop when the gateway runs with --allow-test-ops."""


def phase(gateway: GatewayView, stop: asyncio.Event) -> Phase:
    """What `systemctl status` should say right now."""
    ready = gateway.ready.is_set()
    if stop.is_set():
        return Phase(
            ready=ready, stopping=True, status="stopping: finishing the answer in progress"
        )
    worker = gateway.worker
    buses = {name: a.connected for name, a in list(gateway.adapters.items())}
    down = sorted(name for name, up in buses.items() if not up)
    if not ready:
        if gateway.journal is None:
            status = "opening journal"
        elif worker is None or worker.state in ("starting", "stopped"):
            status = "starting model worker"
        elif down:
            status = f"connecting to {', '.join(down)}"
        else:
            status = "starting: recovering journal"
        return Phase(ready=False, stopping=False, status=status)
    if gateway.state() == "degraded":
        status = "degraded: model worker restart budget spent, answering with fallbacks"
    elif worker is not None and worker.state == "restarting":
        status = "model worker restarting"
    elif down:
        status = f"{', '.join(down)} disconnected, reconnecting"
    else:
        m = gateway.metrics
        depth = gateway.service.queue_depth if gateway.service is not None else 0
        status = f"ready: {m.answered + m.fallback} questions answered, {depth} queued"
    return Phase(ready=True, stopping=False, status=status)


class Operations:
    """The systemd agent task and the metrics server of one `Gateway.run`."""

    def __init__(self, gateway: GatewayView, stop: asyncio.Event) -> None:
        self._gateway = gateway
        self.agent = SystemdAgent.from_environment(
            lambda: phase(gateway, stop), wake=(gateway.ready, stop)
        )
        self._task: asyncio.Task[None] | None = None
        self.metrics_server: MetricsServer | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.agent.run(), name="systemd")

    def start_metrics(self) -> None:
        cfg = self._gateway.settings.metrics
        if not cfg.enabled:
            return
        # Imported only when enabled (off by default): prometheus-client and its HTTP server
        # cost ~10 MiB of RSS and ~80 ms of start-up (make bench, Footprint).
        from gateway.ops.prometheus import MetricsServer

        try:
            self.metrics_server = MetricsServer.start(cfg, self._gateway)
        except OSError as exc:  # a port clash must not stop the answering
            log.error("metrics.listen_failed", host=cfg.host, port=cfg.port, error=str(exc))

    async def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.agent.close()


def install_signal_handlers(
    gateway: GatewayView, stop: asyncio.Event, load: Callable[[], Settings]
) -> None:
    """TERM/INT: graceful stop. HUP: reload the configuration. USR2 (test ops only): stall."""
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[object]] = set()

    def on_hup() -> None:
        if not gateway.ready.is_set() or stop.is_set():
            log.warning("config.reload_ignored", reason="not running (starting or stopping)")
            return
        task: asyncio.Task[object] = loop.create_task(reload_settings(gateway, load))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    if gateway.allow_test_ops:

        def stall() -> None:
            log.warning("test.loop_stalled", seconds=TEST_STALL_S)
            time.sleep(TEST_STALL_S)  # blocks the loop on purpose: the watchdog must notice

        loop.add_signal_handler(signal.SIGUSR2, stall)
