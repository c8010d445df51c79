"""One queue in front of the one model worker, shared by questions and device diagnoses.

A single llama.cpp worker serves everything (DESIGN.md: parallel streams on 2 cores only slow
each other down), so the order of work is the only lever. Lanes, most urgent first:

- CRITICAL: diagnoses of new critical alarms: a stopped press matters more than a question;
- QUESTION: a technician is waiting at a terminal;
- ROUTINE: diagnoses of warnings, infos and threshold crossings.

Strict priority would starve the lower lanes in an alarm flood, so two rules bound the wait:
after `burst` consecutive picks that passed over a waiting lower lane, the oldest waiting head
of a lower lane is served; and any head that has waited `max_wait_s` is served first (oldest
first). So a waiting question is served after at most `burst` other jobs, whatever arrives.
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
        burst: int = 4,
        max_wait_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._burst = burst
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._lanes: dict[Lane, deque[tuple[float, Job]]] = {lane: deque() for lane in Lane}
        self._streak = 0
        self._ready = asyncio.Event()

    def put(self, lane: Lane, job: Job) -> None:
        self._lanes[lane].append((self._clock(), job))
        self._ready.set()

    def depth(self, lane: Lane | None = None) -> int:
        if lane is not None:
            return len(self._lanes[lane])
        return sum(len(q) for q in self._lanes.values())

    def take(self) -> tuple[Lane, Job] | None:
        """The next job by the rules in the module docstring, or None when all lanes are empty."""
        waiting = [lane for lane in Lane if self._lanes[lane]]
        if not waiting:
            return None
        now = self._clock()
        aged = [lane for lane in waiting if now - self._lanes[lane][0][0] >= self._max_wait_s]
        if aged:
            lane = min(aged, key=lambda ln: self._lanes[ln][0][0])
        elif len(waiting) > 1 and self._streak >= self._burst:
            lower = waiting[1:]
            lane = min(lower, key=lambda ln: self._lanes[ln][0][0])
        else:
            lane = waiting[0]
        if lane == waiting[-1]:
            self._streak = 0  # nobody below was passed over
        else:
            self._streak += 1
        _, job = self._lanes[lane].popleft()
        return lane, job

    async def get(self) -> Job:
        while True:
            picked = self.take()
            if picked is not None:
                return picked[1]
            self._ready.clear()
            await self._ready.wait()
