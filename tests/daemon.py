"""`edge-gateway run` as a child process, the way systemd runs it: logs as JSON lines in a file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class Daemon:
    def __init__(
        self,
        config: Path,
        log: Path,
        *,
        env: dict[str, str] | None = None,
        overrides: tuple[str, ...] = (),
        watchdog_pid: bool = False,
        program: tuple[str, ...] = (sys.executable, "-m", "gateway.cli"),
        cwd: Path = REPO,
    ) -> None:
        """`program` is this checkout's gateway unless a test runs an installed one."""
        self.log = log
        argv = [*program, "--config", str(config)]
        for item in ("log.format=json", *overrides):
            argv += ["--set", item]
        argv += ["run", "--allow-test-ops"]
        if watchdog_pid:
            # `exec` keeps the shell's pid, so $$ is the gateway's own pid: WATCHDOG_PID as
            # systemd sets it.
            argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", *argv]
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def wait_event(self, name: str, timeout_s: float = 90.0, after: int = 0) -> dict[str, Any]:
        """The first log event called `name` (counting from the `after`-th event)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.events()[after:]:
                if event.get("event") == name:
                    return event
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited ({self.proc.returncode}) before {name}")
            time.sleep(0.02)
        raise TimeoutError(f"no {name} event in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout_s)
        self._out.close()
        return code
