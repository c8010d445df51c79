"""systemd's notify protocol, spoken from the event loop itself.

Why no library: the protocol is one datagram per message on `$NOTIFY_SOCKET` (a path, or an
abstract socket written `@name`). The maintained packages (`sdnotify`, `systemd-python`) add a
dependency (the second needs libsystemd headers to build) for the dozen lines below.

Why from the loop: the pings are what systemd's watchdog trusts. A thread would keep pinging
while the loop is wedged in a blocking call, which is exactly the failure the watchdog is for.
So `WATCHDOG=1` is sent by a task on the loop at half of `$WATCHDOG_USEC`; a stalled loop stops
the pings and systemd restarts the service. While starting (journal, worker, broker), the same
task sends `EXTEND_TIMEOUT_USEC`, so a slow broker keeps the unit "activating" only as long as
the loop is alive, and `TimeoutStartSec` still catches a wedged start.

Outside systemd (no `$NOTIFY_SOCKET`) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.logging import get_logger

log = get_logger(__name__)

_MIN_INTERVAL_S = 0.05


class Notifier:
    """Sends notify messages; silent (and cheap) when not under systemd."""

    def __init__(self, address: str | None) -> None:
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if address:
            # '@name' is Linux's abstract namespace: a leading NUL byte on the wire.
            self._address = b"\0" + address[1:].encode() if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=value` lines as one datagram; False (logged once per error) if it failed."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            log.warning("systemd.notify_failed", error=str(exc), fields=[f[:40] for f in fields])
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """Half of `$WATCHDOG_USEC`, or None when there is no watchdog for this process.

    `$WATCHDOG_PID`, when set, names the process the watchdog is meant for: a child that
    inherited the environment (the model worker) must not ping on the gateway's behalf.
    """
    usec = env.get("WATCHDOG_USEC", "")
    target = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if target and (not target.isdigit() or int(target) != pid):
        return None
    return max(_MIN_INTERVAL_S, int(usec) / 1_000_000 / 2)


@dataclass(frozen=True, slots=True)
class Phase:
    """What the gateway is doing, as told to systemd (`systemctl status` shows it)."""

    ready: bool
    stopping: bool
    status: str


class SystemdAgent:
    """One task: READY/STOPPING on the gateway's transitions, STATUS when it changes, and the
    watchdog pings. `phase` is read on every tick, so nothing else needs to call in."""

    def __init__(
        self,
        notifier: Notifier,
        phase: Callable[[], Phase],
        *,
        watchdog_s: float | None,
        tick_s: float = 1.0,
        wake: Sequence[asyncio.Event] = (),
    ) -> None:
        self._notifier = notifier
        self._phase = phase
        self._wake = list(wake)
        self._watchdog_s = watchdog_s
        self._tick_s = min(tick_s, watchdog_s) if watchdog_s else tick_s
        self._sent_ready = False
        self._sent_stopping = False
        self._last_status = ""

    @classmethod
    def from_environment(
        cls,
        phase: Callable[[], Phase],
        *,
        wake: Sequence[asyncio.Event] = (),
        env: Mapping[str, str] | None = None,
    ) -> SystemdAgent:
        env = os.environ if env is None else env
        notifier = Notifier(env.get("NOTIFY_SOCKET"))
        watchdog = watchdog_interval_s(env, os.getpid()) if notifier.enabled else None
        if notifier.enabled:
            log.info("systemd.notify_enabled", watchdog_interval_s=watchdog)
        return cls(notifier, phase, watchdog_s=watchdog, wake=wake)

    @property
    def enabled(self) -> bool:
        return self._notifier.enabled

    def update(self) -> None:
        """Send whatever changed since the last call (called by the task; safe to call any time)."""
        phase = self._phase()
        fields: list[str] = []
        if phase.ready and not self._sent_ready and not phase.stopping:
            fields.append("READY=1")
            self._sent_ready = True
        if phase.stopping and not self._sent_stopping:
            fields.append("STOPPING=1")
            self._sent_stopping = True
        if phase.status != self._last_status:
            fields.append(f"STATUS={phase.status}")
            self._last_status = phase.status
        if fields:
            self._notifier.send(*fields)

    async def run(self) -> None:
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        next_ping = loop.time()
        while True:
            self.update()
            if self._watchdog_s is not None and loop.time() >= next_ping:
                extra = []
                if not self._sent_ready:
                    # Still starting: a live loop earns more start time; a wedged one does not.
                    extra.append(f"EXTEND_TIMEOUT_USEC={int(self._watchdog_s * 4 * 1_000_000)}")
                self._notifier.send("WATCHDOG=1", *extra)
                next_ping = loop.time() + self._watchdog_s
            await self._nap(loop.time() + self._tick_s if self._watchdog_s is None else next_ping)

    async def _nap(self, until: float) -> None:
        """Sleep until `until`, or less if a wake event (ready, stop) is set meanwhile."""
        delay = max(0.0, until - asyncio.get_running_loop().time())
        pending = [e for e in self._wake if not e.is_set()]
        if not pending:
            await asyncio.sleep(min(delay, self._tick_s))
            return
        waiters = [asyncio.ensure_future(e.wait()) for e in pending]
        try:
            await asyncio.wait(
                waiters, timeout=min(delay, self._tick_s), return_when="FIRST_COMPLETED"
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    def close(self, final_status: str = "stopped") -> None:
        with contextlib.suppress(OSError):
            if self.enabled and not self._sent_stopping:
                self._notifier.send("STOPPING=1")
            self._notifier.send(f"STATUS={final_status}")
        self._notifier.close()
