"""When to restart a dead worker, and when to stop trying: Frigate's watchdog rule.

At most `budget` restarts per `window_s`, each after an exponential backoff capped at
MAX_BACKOFF_S; past the budget the supervisor is failed (degraded) and, once a whole window has
passed, makes one recovery attempt. Plain logic over a clock the caller passes in, so it is
tested without waiting.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

MAX_BACKOFF_S = 30.0


@dataclass
class RestartBudget:
    budget: int
    window_s: float
    backoff_s: float
    _times: list[float] = field(default_factory=list)
    failed_at: float | None = None

    def reset(self) -> None:
        self._times.clear()

    def next_delay(self, now: float) -> tuple[int, float] | None:
        """(attempt, delay) of the next restart, or None when the budget is spent."""
        self._times = [t for t in self._times if now - t < self.window_s]
        if len(self._times) >= self.budget:
            return None
        self._times.append(now)
        attempt = len(self._times)
        return attempt, min(self.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)

    def fail(self, now: float) -> None:
        self.failed_at = now

    def recovery_due(self, now: float) -> bool:
        return self.failed_at is not None and now - self.failed_at >= self.window_s

    def recovering(self, now: float) -> None:
        """A recovery attempt counts as the first restart of a new window."""
        self._times = [now]

    def recovered(self) -> None:
        self.failed_at = None


def died_of_oom(
    *,
    returncode: int | None,
    oom_kills: int,
    oom_kills_before: int,
    limit_hits: int,
    limit_hits_before: int,
    killed_by_us: bool,
    exit_out_of_memory: int,
) -> bool:
    """Whether a worker's death was memory: the cgroup's OOM counter moved, the worker said so
    itself (its MemoryError exit code), or an unexplained SIGKILL came while the cgroup was at
    its limit (the kernel's OOM killer under cgroup v1 does not always count in oom_kill)."""
    return (
        oom_kills > oom_kills_before
        or returncode == exit_out_of_memory
        or (returncode == -signal.SIGKILL and not killed_by_us and limit_hits > limit_hits_before)
    )
