"""One queue in front of the one model worker, shared by questions and device diagnoses.

A single llama.cpp worker serves everything (DESIGN.md: parallel streams on 2 cores only slow
each other down), so the order of work is the only lever. Lanes, most urgent first:

- CRITICAL: diagnoses of new critical alarms: a stopped press matters more than a question;
- QUESTION: a technician is waiting at a terminal;
- ROUTINE: diagnoses of warnings, infos and threshold crossings.

Strict priority would starve the lower lanes in an alarm flood, so two rules bound the wait:
- earliest deadline first: a job's deadline is its arrival plus its lane's slack (critical 0,
  question `max_wait_s`, routine 2 x `max_wait_s`), so a question is only passed by critical jobs
  that arrived less than `max_wait_s` after it, however many arrive later;
- burst limit: a lane whose head has been passed over `burst` times in a row is served next
  (the most urgent such lane first), so a waiting question is served after at most `burst`
  other jobs (+ one per other starved lane), even if the clock stood still.

Order alone cannot help a question that arrives while a routine diagnosis is generating (2-5 s
on the bundled model): `on_urgent` is called when a question or critical job is put while a
routine job runs, and the diagnosis service makes its generations preemptible (it stops
between two tokens and goes back to its lane; see gateway/diagnosis/service.py for the bound).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from enum import IntEnum

Job = Callable[[], Awaitable[None]]


class Lane(IntEnum):
    CRITICAL = 0
    QUESTION = 1
    ROUTINE = 2


class PriorityScheduler:
    """Lanes of FIFO jobs with burst-limited, aged priority. Touched from the event loop only."""

    def __init__(
        self,
        *,
        burst: int = 2,
        max_wait_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_urgent: Callable[[], object] | None = None,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._burst = burst
        self._slack = {Lane.CRITICAL: 0.0, Lane.QUESTION: max_wait_s, Lane.ROUTINE: 2 * max_wait_s}
        self._clock = clock
        self._lanes: dict[Lane, deque[tuple[float, Job]]] = {lane: deque() for lane in Lane}
        self._passed_over = dict.fromkeys(Lane, 0)
        self._ready = asyncio.Event()
        self._on_urgent = on_urgent
        self.running: Lane | None = None
        """The lane of the job being run (set by `get`, cleared by `finished`)."""

    def put(self, lane: Lane, job: Job) -> None:
        self._lanes[lane].append((self._clock() + self._slack[lane], job))
        self._ready.set()
        if self._on_urgent is not None and self.running is Lane.ROUTINE and lane < Lane.ROUTINE:
            self._on_urgent()

    def finished(self) -> None:
        self.running = None

    def depth(self, lane: Lane | None = None) -> int:
        if lane is not None:
            return len(self._lanes[lane])
        return sum(len(q) for q in self._lanes.values())

    def take(self) -> tuple[Lane, Job] | None:
        """The next job by the rules in the module docstring, or None when all lanes are empty."""
        waiting = [lane for lane in Lane if self._lanes[lane]]
        if not waiting:
            return None
        starved = [lane for lane in waiting if self._passed_over[lane] >= self._burst]
        lane = starved[0] if starved else min(waiting, key=lambda ln: (self._lanes[ln][0][0], ln))
        for other in waiting:
            self._passed_over[other] = 0 if other == lane else self._passed_over[other] + 1
        _, job = self._lanes[lane].popleft()
        if not self._lanes[lane]:
            self._passed_over[lane] = 0
        return lane, job

    async def get(self) -> Job:
        while True:
            picked = self.take()
            if picked is not None:
                self.running = picked[0]
                return picked[1]
            self._ready.clear()
            await self._ready.wait()
