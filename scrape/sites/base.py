"""What every site adapter provides: settings as class attributes and one pagination hook.

A site turns a tag search into pages of `Post`s (`pages()`), with tags by category. Its class
attributes are its polite defaults: `rate` API requests/s and `burst` on the API host, and
`file_rate` requests/s per file host. The sites list their files on CDN hosts (Danbooru
cdn.donmai.us, Gelbooru img*.gelbooru.com, yande.re files.yande.re, safebooru.org its own
host) for which none publishes a limit (Danbooru's documented 10 requests/s is its API
edge; gallery-dl, the reference client, waits between API pages only and downloads files
without a delay); `file_rate` keeps a ceiling anyway. It is 100/s, above
what `--concurrency` 8 reaches at a real network's 80 ms or more per file, so the concurrency
is the bound that acts; 50/s capped scrape near 3x gallery-dl's images/s with 50 ms per
answer (docs/BENCHMARKS.md). On a site whose files come from the API host itself, file
requests share the API budget.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from ..errors import SiteError
from ..post import Post

if TYPE_CHECKING:                   # aiohttp loads only when a scrape runs, not for --help
    from ..http import Client, Reply

log = logging.getLogger(__name__)


class TagCache:
    """Tag name -> category, per site, kept in the run's SQLite state so lookups happen once."""

    def __init__(self, db: sqlite3.Connection, site: str):
        self.db = db
        self.site = site
        db.execute("CREATE TABLE IF NOT EXISTS tag_categories (site TEXT, name TEXT, "
                   "category TEXT, PRIMARY KEY (site, name))")

    def get(self, names: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(names), 500):
            chunk = names[i:i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT name, category FROM tag_categories WHERE site=? "
                                   f"AND name IN ({marks})", [self.site, *chunk])
            out.update(rows.fetchall())
        return out

    def put(self, mapping: dict[str, str]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO tag_categories VALUES (?, ?, ?)",
                            [(self.site, k, v) for k, v in mapping.items()])
        self.db.commit()


class Site:
    name = ""
    base_url = ""
    rate = 2.0                      # polite API requests/s
    burst = 4
    file_rate = 100.0               # file requests/s per file host (no site publishes one)
    credential_vars: tuple[str, str] = ("", "")

    def __init__(self, client: Client, base_url: str | None = None,
                 tag_cache: TagCache | None = None):
        self.client = client
        self.base = (base_url or self.base_url).rstrip("/")
        self.tag_cache = tag_cache
        self.credentials = credentials(self.credential_vars)

    def pages(self, tags: str) -> AsyncIterator[list[Post]]:
        """Yield pages of posts, newest first, until the search is exhausted."""
        raise NotImplementedError

    def url(self, path_or_url: str | None) -> str | None:
        """Absolute URL for a site-relative or protocol-relative one."""
        if not path_or_url:
            return None
        if path_or_url.startswith("//"):
            return "https:" + path_or_url
        return urljoin(self.base + "/", path_or_url)

    async def get_json(self, path: str, params: dict, headers: dict | None = None,
                       final=None) -> tuple[Reply, object]:
        """GET an API path; the reply and its JSON (None when the body is not JSON)."""
        reply = await self.client.get(f"{self.base}{path}", params=params, headers=headers,
                                      final=final)
        try:
            data = json.loads(reply.body) if reply.body.strip() else None
        except ValueError:
            data = None
        return reply, data


def credentials(names: tuple[str, str]) -> tuple[str, str] | None:
    """A (user, key) pair from two environment variables, or None when either is unset."""
    if not names[0]:
        return None
    user, key = os.environ.get(names[0], ""), os.environ.get(names[1], "")
    if bool(user) != bool(key):
        raise SiteError(f"set both {names[0]} and {names[1]}, or neither")
    return (user, key) if user else None
