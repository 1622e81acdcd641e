"""A per-host rate limit for asyncio: never more than `rate` requests/s after a `burst`.

Each request reserves the next free slot on a schedule (GCRA, the "virtual scheduling" form of
a token bucket): slots are spaced 1/rate apart and up to `burst` may be taken early. Slots are
absolute times, so a late wake-up never pushes later requests back and the long-run rate stays
at `rate`. Every request takes a slot, retries included, so a flaky site is not hammered.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    def __init__(self, rate: float, burst: int):
        if rate <= 0:
            raise ValueError("rate must be > 0 (use None for no limit)")
        self.rate = rate
        self.burst = max(1, burst)
        self._interval = 1.0 / rate
        self._tat = time.monotonic()        # theoretical arrival time of the next request

    async def acquire(self) -> None:
        now = time.monotonic()
        tat = max(self._tat, now)
        self._tat = tat + self._interval
        wait = tat - (self.burst - 1) * self._interval - now
        if wait > 0:
            await asyncio.sleep(wait)


class HostLimiter:
    """One bucket per host, created on first use."""

    def __init__(self, rate: float | None, burst: int):
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    async def acquire(self, host: str) -> None:
        if self.rate is None:
            return
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = TokenBucket(self.rate, self.burst)
        await bucket.acquire()
