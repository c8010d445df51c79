"""Per-device rate limit on diagnoses: a token bucket per device, with reservations.

A device that raises many different codes at once must not monopolise the model. Instead of
refusing a new alarm when its device's bucket is empty, the limiter reserves the next token and
says how long to wait, so a burst is spread out rather than lost; only a reservation further
than `max_delay_s` away is refused (and counted by the caller). Buckets live in a bounded LRU
map: an evicted device starts again with a full bucket, which errs on the side of diagnosing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class DeviceRateLimiter:
    def __init__(
        self,
        *,
        per_minute: float,
        burst: int,
        max_delay_s: float,
        max_devices: int,
    ) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._max_delay_s = max_delay_s
        self._max_devices = max_devices
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def reserve(self, device_id: str, now: float) -> float | None:
        """Seconds until this device may have its next diagnosis (0: now), or None: refused."""
        bucket = self._buckets.get(device_id)
        if bucket is None:
            bucket = _Bucket(tokens=self._burst, updated=now)
            self._buckets[device_id] = bucket
            if len(self._buckets) > self._max_devices:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(device_id)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self._burst, bucket.tokens + elapsed * self._rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        delay = (1.0 - bucket.tokens) / self._rate if self._rate > 0 else float("inf")
        if delay > self._max_delay_s:
            return None
        bucket.tokens -= 1.0  # reserved: the next caller waits behind this one
        return delay
