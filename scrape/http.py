"""The HTTP client: one aiohttp session, per-host rate limits, retries with backoff.

Two budgets: the API hosts (`api_hosts`) get `rate`/`burst`, the site's documented API limit;
every other host is a file host (a CDN such as cdn.donmai.us) and gets `file_rate` per host,
which the API limits do not cover. With no `api_hosts` every host is held to `rate`.

`Client.get_bytes(url)` returns a body or raises `FetchError` after `retries` attempts. It
retries 429, 5xx, timeouts, connection errors and bodies shorter than their Content-Length,
waiting `backoff * 2**attempt` seconds with full jitter, or what Retry-After asks (capped).
A Cloudflare challenge is a `SiteError`: retrying cannot fix a blocked user agent.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from .errors import FetchError, SiteError
from .ratelimit import Clock, HostLimiter

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504, 520, 521, 522, 524}
MAX_RETRY_AFTER = 300.0


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes
    url: str

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip().lower()


class Client:
    """Async HTTP for one run. Use as `async with Client(...) as client`."""

    def __init__(self, user_agent: str, rate: float | None = None, burst: int = 1,
                 retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
                 concurrency: int = 16, file_rate: float | None = None,
                 api_hosts: frozenset[str] = frozenset(), clock=None):
        self.user_agent = user_agent
        self.clock = clock or Clock()
        self.limiter = HostLimiter(rate, burst, self.clock)
        self.file_limiter = HostLimiter(file_rate, concurrency, self.clock)
        self.api_hosts = api_hosts
        self.retries = retries
        self.backoff = backoff
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=min(timeout, 30))
        self.concurrency = concurrency
        self.session: aiohttp.ClientSession | None = None
        self.requests = 0
        self.retried = 0

    async def __aenter__(self) -> Client:
        connector = aiohttp.TCPConnector(limit=self.concurrency + 4, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                             headers={"User-Agent": self.user_agent})
        return self

    async def __aexit__(self, *exc) -> None:
        if self.session is not None:
            await self.session.close()

    async def get(self, url: str, params: dict | None = None,
                  ok_statuses: frozenset[int] = frozenset({200}),
                  headers: dict | None = None, final=None) -> Reply:
        """GET with retries. Returns any reply whose status is in `ok_statuses`, any status
        that is not retryable (so callers can read an API's error body), and any reply for
        which `final(reply)` is true (an application error that a retry cannot fix)."""
        assert self.session is not None, "use `async with Client(...)`"
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise FetchError("bad_url", f"not an http(s) URL: {url[:100]!r}")
        host = parts.netloc
        last: FetchError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            api = not self.api_hosts or host in self.api_hosts
            await (self.limiter if api else self.file_limiter).acquire(host)
            self.requests += 1
            try:
                async with self.session.get(url, params=params, headers=headers,
                                            allow_redirects=True) as r:
                    body = await r.read()
                    reply = Reply(r.status, dict(r.headers), body, str(r.url))
            except (aiohttp.InvalidURL, aiohttp.TooManyRedirects) as exc:
                raise FetchError("bad_url", f"{exc.__class__.__name__}: {exc}") from None
            except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError,
                    aiohttp.ClientResponseError) as exc:
                reason = "timeout" if isinstance(exc, TimeoutError) else "connection"
                if isinstance(exc, aiohttp.ClientPayloadError):
                    reason = "truncated"
                last = FetchError(reason, f"{reason}: {exc.__class__.__name__} {exc}".strip())
                await self.pause(attempt, None)
                continue
            if _is_challenge(reply):
                raise SiteError(f"{host} answered a Cloudflare challenge ({reply.status}); "
                                f"it rejects the user agent {self.user_agent!r}")
            if reply.status in ok_statuses or (final is not None and final(reply)):
                return reply
            if reply.status in RETRY_STATUS:
                last = FetchError(f"http_{reply.status}", f"HTTP {reply.status} from {host}",
                                  reply.status)
                await self.pause(attempt, reply.headers.get("Retry-After"))
                continue
            return reply
        raise last or FetchError("failed", "no attempt was made")

    async def pause(self, attempt: int, retry_after: str | None) -> None:
        if attempt >= self.retries:
            return
        wait = _retry_after_seconds(retry_after)
        if wait is None:
            wait = random.uniform(0, self.backoff * 2 ** attempt)
        log.debug("retrying in %.2f s (attempt %d)", wait, attempt + 1)
        await self.clock.sleep(min(wait, MAX_RETRY_AFTER))


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_challenge(reply: Reply) -> bool:
    if reply.status not in {403, 503}:
        return False
    server = reply.headers.get("Server", "").lower()
    return reply.headers.get("cf-mitigated") == "challenge" or (
        server == "cloudflare" and (b"_cf_chl_opt" in reply.body or b"jschl" in reply.body))
