"""The notify protocol against real AF_UNIX datagram sockets (path and abstract namespace)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.ops.sdnotify import Notifier, Phase, SystemdAgent, watchdog_interval_s


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    name = f"edge-gw-test-{secrets.token_hex(4)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    yield "@" + name, sock
    sock.close()


def test_sends_to_a_socket_path(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        notifier = Notifier(str(path))
        assert notifier.send("READY=1", "STATUS=ok")
        assert server.recv(4096) == b"READY=1\nSTATUS=ok"
        notifier.close()


def test_sends_to_an_abstract_socket(abstract_socket: tuple[str, socket.socket]) -> None:
    address, server = abstract_socket
    notifier = Notifier(address)
    assert notifier.send("WATCHDOG=1")
    assert server.recv(4096) == b"WATCHDOG=1"


def test_without_notify_socket_everything_is_a_noop() -> None:
    notifier = Notifier(None)
    assert not notifier.enabled
    assert notifier.send("READY=1") is False


def test_missing_listener_is_logged_not_raised(tmp_path: Path) -> None:
    assert Notifier(str(tmp_path / "nobody")).send("READY=1") is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4242"}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid(
    env: dict[str, str], expected: float | None
) -> None:
    assert watchdog_interval_s(env, pid=4242) == expected


class Datagrams:
    """What the agent sent, read from the socket as it arrives (lines of each datagram)."""

    def __init__(self, server: socket.socket) -> None:
        server.setblocking(False)
        self._server = server
        self.datagrams: list[list[str]] = []

    @property
    def lines(self) -> list[str]:
        return [line for datagram in self.datagrams for line in datagram]

    def pings(self, after: str | None = None) -> int:
        """WATCHDOG=1 lines so far, or only those after the first `after` line (0 if none)."""
        lines = self.lines
        if after is not None:
            if after not in lines:
                return 0
            lines = lines[lines.index(after) :]
        return lines.count("WATCHDOG=1")

    async def until(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Read datagrams until `predicate()` holds (the timeout is a bound, not a measurement)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            while not predicate():
                data = await loop.sock_recv(self._server, 4096)
                self.datagrams.append(data.decode().split("\n"))

    def drain(self) -> None:
        """Whatever is already in the socket, without waiting."""
        while True:
            try:
                self.datagrams.append(self._server.recv(4096).decode().split("\n"))
            except BlockingIOError:
                return


async def test_agent_sends_ready_once_status_on_change_and_pings(
    abstract_socket: tuple[str, socket.socket],
) -> None:
    """Driven by what arrives, not by the clock: each phase lasts until two more pings came."""
    address, server = abstract_socket
    got = Datagrams(server)
    state = {"phase": Phase(ready=False, stopping=False, status="starting model worker")}
    ready = asyncio.Event()
    agent = SystemdAgent.from_environment(
        lambda: state["phase"],
        wake=(ready,),
        env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"},
    )
    task = asyncio.create_task(agent.run())
    try:
        await got.until(lambda: got.pings() >= 2)
        state["phase"] = Phase(ready=True, stopping=False, status="ready: 0 questions answered")
        ready.set()
        await got.until(lambda: got.pings(after="READY=1") >= 2)
        state["phase"] = Phase(ready=True, stopping=True, status="stopping")
        await got.until(lambda: got.pings(after="STOPPING=1") >= 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        agent.close()
    got.drain()
    lines = got.lines
    assert lines.count("READY=1") == 1
    assert lines.count("STOPPING=1") == 1
    assert lines.index("STATUS=starting model worker") < lines.index("READY=1")
    assert lines.index("READY=1") < lines.index("STATUS=ready: 0 questions answered")
    assert lines.index("STATUS=ready: 0 questions answered") < lines.index("STOPPING=1")
    assert lines.count("STATUS=starting model worker") == 1  # only on change, though re-read
    assert lines.count("STATUS=ready: 0 questions answered") == 1  # on every tick
    # Pings go on in every phase (the waits above needed two in each), and before READY every
    # ping also asks for more start time; from READY on none does.
    ready_at = next(i for i, datagram in enumerate(got.datagrams) if "READY=1" in datagram)
    pings = [(i, d) for i, d in enumerate(got.datagrams) if "WATCHDOG=1" in d]
    assert sum(i < ready_at for i, _ in pings) >= 2
    for i, datagram in pings:
        extends = any(line.startswith("EXTEND_TIMEOUT_USEC=") for line in datagram)
        assert extends == (i < ready_at), (i, ready_at, datagram)


async def test_a_blocked_loop_sends_no_pings(abstract_socket: tuple[str, socket.socket]) -> None:
    """The loop is blocked for six ping intervals (the interval is a parameter: 0.05 s): no
    ping can arrive meanwhile, whatever the machine's speed, and pings resume after it."""
    address, server = abstract_socket
    got = Datagrams(server)
    agent = SystemdAgent.from_environment(
        lambda: Phase(ready=True, stopping=False, status="ready"),
        env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"},
    )
    task = asyncio.create_task(agent.run())
    try:
        await got.until(lambda: got.pings() >= 2)
        got.drain()
        before = got.pings()
        time.sleep(0.3)  # noqa: ASYNC251 - blocks the loop on purpose: six pings due, none sent
        got.drain()
        during = got.pings() - before
        await got.until(lambda: got.pings() > before)  # pings resume once the loop runs again
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        agent.close()
    assert during == 0
