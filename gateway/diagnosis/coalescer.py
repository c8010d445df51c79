"""Alarm coalescing: identical alarms (device, code) inside one window become one diagnosis.

A window opens with the first event of a key and stays open `window_s`, or until its diagnosis
is ready if the model is slower; every repeat inside it only increments `count`. The diagnosis is
published when the window closes, so it carries the window's exact repeat count, and a chattering
sensor costs one model run per window however fast it chatters. The number of open windows is
bounded: past it, an event of a new key is refused (the caller counts it), never queued.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from models.device import AlarmRaised, Severity, ThresholdCrossed

AlarmKey = tuple[str, str]
"""(device id, alarm code)."""

RaisingEvent = AlarmRaised | ThresholdCrossed


class Offer(enum.Enum):
    OPENED = "opened"
    COALESCED = "coalesced"
    OVERFLOW = "overflow"


@dataclass(slots=True, eq=False)
class Window:
    """One coalescing window; mutated from the event loop only."""

    device_id: str
    first: RaisingEvent
    opened_at: float
    deadline: float
    severity: Severity
    count: int = 1
    last: RaisingEvent | None = None
    closed: bool = False
    result: object | None = field(default=None, repr=False)
    preemptions: int = 0
    """Times its generation gave way to a question (bounded in time: DiagnosisService)."""

    @property
    def key(self) -> AlarmKey:
        return (self.device_id, self.first.code)

    @property
    def raised_at(self) -> datetime:
        return self.first.timestamp

    def add(self, event: RaisingEvent) -> None:
        self.count += 1
        self.last = event
        if event.severity.rank > self.severity.rank:
            self.severity = event.severity  # escalation inside a window is kept


class Coalescer:
    def __init__(self, *, window_s: float, max_open: int) -> None:
        self.window_s = window_s
        self.max_open = max_open
        self._open: dict[AlarmKey, Window] = {}

    def __len__(self) -> int:
        return len(self._open)

    def offer(self, device_id: str, event: RaisingEvent, now: float) -> tuple[Offer, Window | None]:
        key = (device_id, event.code)
        window = self._open.get(key)
        if window is not None:
            window.add(event)
            return Offer.COALESCED, window
        if len(self._open) >= self.max_open:
            return Offer.OVERFLOW, None
        window = Window(
            device_id=device_id,
            first=event,
            opened_at=now,
            deadline=now + self.window_s,
            severity=event.severity,
        )
        self._open[key] = window
        return Offer.OPENED, window

    def close(self, window: Window) -> int:
        """Close a window (later events open a new one); returns its final count."""
        if self._open.get(window.key) is window:
            del self._open[window.key]
        window.closed = True
        return window.count

    def cancel(self, key: AlarmKey) -> Window | None:
        """Close the open window of `key`, if any (the alarm was cleared before publication)."""
        window = self._open.pop(key, None)
        if window is not None:
            window.closed = True
        return window
