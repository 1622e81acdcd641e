"""Fault injection and the request log (:mod:`.middleware` applies them to each request).

Which request fails is a pure function of `(fault seed, fault kind, URL, attempt number)`: a
faulty URL fails for its first `attempts` requests and then succeeds (0 means it always fails),
so a test can count on a retrying client getting through, and on a non-retrying one failing.

Kinds (each a fraction of URLs, switchable per run with `--faults kind=rate,...` or at run time
with `POST /_emulator/faults`):
  server_error  500/502/503/504 answers (503 with Retry-After)
  rate_429      429, half of them with Retry-After
  slow          answers delayed by `slow_seconds` (or until the client hangs up)
  reset         the connection closed before answering
  truncate      a file body cut short of its Content-Length
  md5_mismatch  one byte of the file changed
  html_200      an HTML error page with status 200 at an image URL
  empty         a file answered with Content-Length: 0
  not_found     a file answered 404 (an original missing while its sample exists)
Plus `rate_limit` (requests/s per client, with `burst`), answered 429 like Danbooru's nginx, and
`block_browser_ua`, a Cloudflare-style 403 challenge for browser-like and default library agents.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

from aiohttp import web

KINDS = ("server_error", "rate_429", "slow", "reset", "truncate", "md5_mismatch", "html_200",
         "empty", "not_found")
FILE_ONLY = {"truncate", "md5_mismatch", "html_200", "empty", "not_found"}
BLOCKED_AGENTS = ("mozilla/", "python-requests", "python-urllib", "aiohttp", "go-http-client",
                  "okhttp", "java/")
CHALLENGE = ("<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>"
             "<script>window._cf_chl_opt={cvId: '3'};</script>Checking your browser.</body></html>")
QUERY_CANCELED = {"success": False, "error": "ActiveRecord::QueryCanceled",
                  "message": "The database timed out running your query.", "backtrace": []}
FAULT = web.RequestKey("fault", str)   # the file fault a handler must apply, if any
NGINX_429 = ("<html><head><title>429 Too Many Requests</title></head><body><center><h1>429 Too "
             "Many Requests</h1></center><hr><center>nginx</center></body></html>")


@dataclass
class FaultConfig:
    server_error: float = 0.0
    rate_429: float = 0.0
    slow: float = 0.0
    reset: float = 0.0
    truncate: float = 0.0
    md5_mismatch: float = 0.0
    html_200: float = 0.0
    empty: float = 0.0
    not_found: float = 0.0
    attempts: int = 1               # failing requests per faulty URL; 0 = fails forever
    slow_seconds: float = 2.0
    retry_after: int = 1            # seconds sent in Retry-After where one is sent
    rate_limit: float = 0.0         # requests/s per client; 0 = unlimited
    burst: int = 50
    block_browser_ua: bool = True
    seed: int = 0

    @classmethod
    def parse(cls, text: str) -> FaultConfig:
        """Parse `kind=value,...` (e.g. `server_error=0.1,attempts=2,rate_limit=10`)."""
        config = cls()
        config.update(dict(item.split("=", 1) for item in text.split(",") if item.strip()))
        return config

    def update(self, values: dict) -> None:
        types = {f.name: f.type for f in fields(self)}
        for key, value in values.items():
            key = key.strip()
            if key not in types:
                raise ValueError(f"unknown fault setting: {key}")
            if types[key] == "bool":
                value = value if isinstance(value, bool) else str(value).lower() in {"1", "true"}
            elif types[key] == "int":
                value = int(value)
            else:
                value = float(value)
            setattr(self, key, value)

    def hits(self, kind: str, url: str, attempt: int) -> bool:
        rate = getattr(self, kind)
        if rate <= 0 or (self.attempts and attempt > self.attempts):
            return False
        digest = hashlib.blake2b(f"{self.seed}|{kind}|{url}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < rate


class InjectedReset(ConnectionResetError):
    """Raised to drop a connection on purpose; runner.py keeps it out of aiohttp's error log."""


class QuietResets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedReset))


class TokenBucket:
    """The per-client rate limit; ``clock`` (seconds) is injectable, so tests need no sleep."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.state: dict[str, tuple[float, float]] = {}
        self.clock = clock

    def take(self, client: str, rate: float, burst: int) -> bool:
        now = self.clock()
        tokens, last = self.state.get(client, (float(burst), now))
        tokens = min(float(burst), tokens + (now - last) * rate)
        ok = tokens >= 1.0
        self.state[client] = (tokens - 1.0 if ok else tokens, now)
        return ok


class FileGate:
    """Holds file requests past the first ``allow`` until :meth:`open` (tests: interrupt a
    scrape with an exact number of files served). Used on the emulator's event loop only."""

    def __init__(self):
        self.allow: int | None = None
        self.passed = 0
        self._opened: asyncio.Event | None = None

    def close_after(self, allow: int) -> None:
        self.allow, self.passed, self._opened = allow, 0, asyncio.Event()

    def open(self) -> None:
        if self._opened is not None:
            self._opened.set()
        self.allow, self._opened = None, None

    async def through(self) -> None:
        if self.allow is None or self._opened is None:
            return
        if self.passed < self.allow:
            self.passed += 1
            return
        await self._opened.wait()


class RequestLog:
    """Every request served: time, client, method, path, query, status, agent, fault."""

    def __init__(self, maxlen: int = 200_000):
        self.entries: deque[dict] = deque(maxlen=maxlen)
        self.attempts: Counter[str] = Counter()
        self.total = 0
        self.in_flight = 0  # requests received and not yet answered (slow, held, rendering)

    def add(self, **entry) -> None:
        self.total += 1
        self.entries.append({"n": self.total, **entry})


def is_blocked_agent(agent: str) -> bool:
    agent = agent.lower()
    return not agent or any(marker in agent for marker in BLOCKED_AGENTS)


def config_dict(config: FaultConfig) -> dict:
    return asdict(config)
