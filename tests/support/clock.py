"""Virtual time for the rate-limit and retry tests."""

from __future__ import annotations

import asyncio

from scrape.ratelimit import Clock


class FakeClock(Clock):
    """Virtual time for the limiter and retry tests: sleeps take no real time, and are kept."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(seconds, 0.0)
        await asyncio.sleep(0)

    async def sleep_until(self, when: float) -> None:
        self.sleeps.append(when - self.t)
        self.t = max(self.t, when)
        await asyncio.sleep(0)
