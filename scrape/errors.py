"""Exceptions of the scrape stage.

    ScrapeError            anything the user can fix; the CLI prints one line and exits 2
    ├── UsageError         a bad flag value or combination
    └── SiteError          the site refuses the job (auth, tag limit, a challenge page)
    FetchError             one request failed for good (after retries); per-post, never fatal
"""

from __future__ import annotations


class ScrapeError(Exception):
    """Base class of every expected, user-facing scrape error."""


class UsageError(ScrapeError):
    """A bad option value or combination."""


class SiteError(ScrapeError):
    """The site refuses the whole job: authentication, query limits, a Cloudflare challenge."""


class FetchError(Exception):
    """A request that failed after its retries; `reason` is a short status-like word."""

    def __init__(self, reason: str, message: str, status: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.status = status
