"""A per-host token bucket for asyncio: never more than `rate` requests/s after a `burst`.

Every request takes a token, retries included, so a flaky site is not hammered harder.
Tokens are handed out in arrival order (one lock per host), so waiting is fair.
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
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.rate)


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
