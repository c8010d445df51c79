"""Real brokers for tests: mosquitto started from the shipped configuration on a free port.

mosquitto runs as on a plant's box: Debian's stock /etc/mosquitto/mosquitto.conf (a copy in
tests/debian/, only its paths moved into the test's directory) with our drop-in in its included
conf.d directory (only the listener's port moved).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parent.parent
SHIPPED_MOSQUITTO_CONF = REPO / "configs" / "mosquitto.conf"
DEBIAN_STOCK_CONF = REPO / "tests" / "debian" / "mosquitto.conf"
DROPIN_NAME = "edge-gateway.conf"  # as in /etc/mosquitto/conf.d/edge-gateway.conf
STOCK_PATHS = ("pid_file", "persistence_location", "log_dest file", "include_dir")
"""The only lines of the stock file a test changes: each one's path, into the test's directory."""


def stock_config(workdir: Path) -> str:
    """Debian's stock mosquitto.conf with its paths (and nothing else) moved into `workdir`."""
    text = DEBIAN_STOCK_CONF.read_text()
    for key, value in zip(
        STOCK_PATHS,
        (workdir / "mosquitto.pid", f"{workdir}/", workdir / "mosquitto.log", workdir / "conf.d"),
        strict=True,
    ):
        text, n = re.subn(rf"(?m)^{key} .*$", f"{key} {value}", text)
        assert n == 1, f"{DEBIAN_STOCK_CONF} has no single `{key}` line"
    return text


def write_plant_config(workdir: Path, dropin: str) -> Path:
    """The plant's broker in `workdir`: the stock file (paths moved) and `dropin` as
    conf.d/edge-gateway.conf, what `cp ... /etc/mosquitto/conf.d/edge-gateway.conf` makes.
    Logs everything to workdir/mosquitto.log; returns the main configuration file."""
    (workdir / "conf.d").mkdir(parents=True, exist_ok=True)
    (workdir / "conf.d" / DROPIN_NAME).write_text(dropin)
    text = stock_config(workdir) + "\nlog_type all\n"
    if running_as_root():
        # Otherwise mosquitto drops to user `mosquitto`, which cannot write the test's tmp dir.
        text += "user root\n"
    conf = workdir / "mosquitto.conf"
    conf.write_text(text)
    return conf


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


class BrokerProcess:
    """A broker run as a child process: `start()` (subclasses), stop (SIGTERM, or SIGKILL as a
    crash would), and a context manager around both."""

    proc: subprocess.Popen[bytes] | None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Mosquitto(BrokerProcess):
    """One mosquitto process running the shipped configuration, moved to a port and directory."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError(
                "mosquitto is not installed: run `make deps` (apt-get install mosquitto)"
            )
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.log = workdir / "mosquitto.log"
        workdir.mkdir(parents=True, exist_ok=True)
        dropin, n = re.subn(
            r"(?m)^listener .*$",
            f"listener {self.port} 127.0.0.1",
            SHIPPED_MOSQUITTO_CONF.read_text(),
        )
        assert n == 1, "configs/mosquitto.conf: one listener expected"
        self.conf = write_plant_config(workdir, dropin)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], cwd=self.workdir)
        wait_for_port(self.port)


def running_as_root() -> bool:
    return os.geteuid() == 0


class NatsServer(BrokerProcess):
    """One nats-server process with JetStream on a free loopback port and its own store dir.

    `stop()` then `start()` restarts it on the same port and store, as an operator's restart
    would; a config file (e.g. the shipped one, moved to this port) can replace the flags.
    """

    def __init__(self, workdir: Path, port: int | None = None, conf: Path | None = None) -> None:
        binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(binary).exists():
            raise RuntimeError("nats-server is not installed: run `make deps`")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.store = workdir / "jetstream"
        self.log = workdir / "nats-server.log"
        self.conf = conf
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-l", str(self.log)]
        if self.conf is not None:
            argv += ["-c", str(self.conf)]
        else:
            argv += ["-js", "-sd", str(self.store)]
        self.proc = subprocess.Popen(argv, cwd=self.workdir)
        wait_for_port(self.port)
