"""A per-host rate limit for asyncio: never more than `rate` requests/s after a `burst`.

Each request reserves the next free slot on a schedule (GCRA, the "virtual scheduling" form of
a token bucket): slots are spaced 1/rate apart and up to `burst` may be taken early. Slots are
absolute times, so a late wake-up never pushes later requests back and the long-run rate stays
at `rate`. Every request takes a slot, retries included, so a flaky site is not hammered.
Time comes from a `Clock` (tests pass one whose sleeps take no real time).
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Real time: monotonic seconds, and asyncio sleeps."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def sleep_until(self, when: float) -> None:
        await self.sleep(when - self.now())


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Clock | None = None):
        if rate <= 0:
            raise ValueError("rate must be > 0 (use None for no limit)")
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock or Clock()
        self._interval = 1.0 / rate
        self._tat = self.clock.now()        # theoretical arrival time of the next request

    async def acquire(self) -> float:
        """Wait for a slot; returns the clock time the request may go."""
        now = self.clock.now()
        tat = max(self._tat, now)
        self._tat = tat + self._interval
        go = tat - (self.burst - 1) * self._interval
        if go > now:
            await self.clock.sleep_until(go)
            return go
        return now


class HostLimiter:
    """One bucket per host, created on first use."""

    def __init__(self, rate: float | None, burst: int, clock: Clock | None = None):
        self.rate = rate
        self.burst = burst
        self.clock = clock or Clock()
        self._buckets: dict[str, TokenBucket] = {}

    async def acquire(self, host: str) -> float:
        """Wait for a slot on `host`; returns the clock time the request may go."""
        if self.rate is None:
            return self.clock.now()
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = TokenBucket(self.rate, self.burst, self.clock)
        return await bucket.acquire()
