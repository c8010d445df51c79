"""Keyed token buckets with reservations: the rate limit of diagnoses per device and of
questions per terminal.

One sender (a device raising many codes at once, a terminal stuck in a resend loop) must not
monopolise the one model worker. Instead of refusing when a key's bucket is empty, the limiter
can reserve the next token and say how long to wait, so a burst is spread out rather than lost
(diagnoses); only a reservation further than `max_delay_s` away is refused, and with
`max_delay_s=0` every request past the bucket is refused at once (questions: the terminal is
told `rate_limited` and may ask again). Buckets live in a bounded LRU map: an evicted key
starts again with a full bucket, which errs on the side of answering.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        *,
        per_minute: float,
        burst: int,
        max_delay_s: float,
        max_keys: int,
    ) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._max_delay_s = max_delay_s
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def reserve(self, key: str, now: float) -> float | None:
        """Seconds until this key may go (0: now), or None: refused (nothing reserved)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(tokens=self._burst, updated=now)
            self._buckets[key] = bucket
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
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
