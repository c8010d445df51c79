"""The notify protocol against real AF_UNIX datagram sockets (path and abstract namespace)."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Iterator
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


async def test_agent_sends_ready_once_status_on_change_and_pings(
    abstract_socket: tuple[str, socket.socket],
) -> None:
    address, server = abstract_socket
    server.setblocking(False)
    state = {"phase": Phase(ready=False, stopping=False, status="starting model worker")}
    ready = asyncio.Event()
    agent = SystemdAgent.from_environment(
        lambda: state["phase"],
        wake=(ready,),
        env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"},
    )
    task = asyncio.create_task(agent.run())
    await asyncio.sleep(0.35)
    state["phase"] = Phase(ready=True, stopping=False, status="ready: 0 questions answered")
    ready.set()
    await asyncio.sleep(0.3)
    state["phase"] = Phase(ready=True, stopping=True, status="stopping")
    await asyncio.sleep(0.25)
    task.cancel()
    agent.close()
    messages = []
    while True:
        try:
            messages.append(server.recv(4096).decode())
        except BlockingIOError:
            break
    lines = [line for m in messages for line in m.split("\n")]
    assert lines.count("READY=1") == 1
    assert lines.count("STOPPING=1") == 1
    assert lines.index("STATUS=starting model worker") < lines.index("READY=1")
    assert lines.count("STATUS=starting model worker") == 1  # only on change
    assert lines.count("WATCHDOG=1") >= 5  # every 0.1 s for 0.9 s
    # Before READY the loop also asks for more start time; after READY it does not.
    extend = [i for i, line in enumerate(lines) if line.startswith("EXTEND_TIMEOUT_USEC=")]
    assert extend
    assert max(extend) < lines.index("READY=1")


async def test_a_blocked_loop_sends_no_pings(abstract_socket: tuple[str, socket.socket]) -> None:
    address, server = abstract_socket
    server.setblocking(False)
    agent = SystemdAgent.from_environment(
        lambda: Phase(ready=True, stopping=False, status="ready"),
        env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"},
    )
    task = asyncio.create_task(agent.run())
    await asyncio.sleep(0.2)
    arrivals: list[float] = []

    def drain() -> None:
        while True:
            try:
                if b"WATCHDOG=1" in server.recv(4096):
                    arrivals.append(time.monotonic())
            except BlockingIOError:
                return

    drain()
    before = len(arrivals)
    assert before >= 1
    time.sleep(0.6)  # noqa: ASYNC251 - blocks the loop on purpose: six pings due, none sent
    drain()
    during = len(arrivals) - before
    await asyncio.sleep(0.3)
    drain()
    task.cancel()
    assert during == 0
    assert len(arrivals) > before  # pings resume once the loop runs again
