"""Danbooru v2: `b<id>` keyset pages (no 1000-page wall), tags by category on every post.

Credentials: DANBOORU_LOGIN and DANBOORU_API_KEY, sent as HTTP Basic auth to the API host only.
Anonymous users and members may search 2 tags at a time, Gold 6: a 422 becomes a clear message.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from ..errors import SiteError
from ..post import Post, as_flag, as_int, parent_id, rating_word, safe_ext, valid_md5
from .base import Site

log = logging.getLogger(__name__)
PAGE = 200
PAGE_LIMIT = 1000


class Danbooru(Site):
    name = "danbooru"
    base_url = "https://danbooru.donmai.us"
    rate = 5.0              # half the edge limit of 10 requests/s per IP
    burst = 10
    credential_vars = ("DANBOORU_LOGIN", "DANBOORU_API_KEY")

    def _headers(self) -> dict | None:
        if self.credentials is None:
            return None
        token = base64.b64encode(":".join(self.credentials).encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def pages(self, tags: str) -> AsyncIterator[list[Post]]:
        terms = tags.lower().split()
        orders = [t.split(":", 1)[1] for t in terms if t.startswith(("order:", "ordfav:"))]
        if orders and orders[0] not in {"id", "id_asc", "id_desc"}:
            async for page in self._numbered(tags):
                yield page
            return
        ascending = bool(orders) and orders[0] in {"id", "id_asc"}
        cursor = "a0" if ascending else None
        while True:
            params = {"tags": tags, "limit": PAGE}
            if cursor:
                params["page"] = cursor
            batch = await self._page(params)
            if not batch:
                return
            yield batch
            ids = [p.id for p in batch]
            cursor = f"a{max(ids)}" if ascending else f"b{min(ids)}"

    async def _numbered(self, tags: str) -> AsyncIterator[list[Post]]:
        log.warning("danbooru: an order: search pages by number and stops at page %d",
                    PAGE_LIMIT)
        for number in range(1, PAGE_LIMIT + 1):
            batch = await self._page({"tags": tags, "limit": PAGE, "page": number})
            if not batch:
                return
            yield batch

    async def _page(self, params: dict) -> list[Post]:
        reply, data = await self.get_json("/posts.json", params, self._headers())
        if reply.status == 410:
            return []
        if reply.status != 200 or not isinstance(data, list):
            message = data.get("message") if isinstance(data, dict) else None
            if reply.status == 422:
                raise SiteError(f"danbooru refused the search: {message or 'HTTP 422'} "
                                "(anonymous users and members: 2 tags; set DANBOORU_LOGIN and "
                                "DANBOORU_API_KEY of a Gold account for 6)")
            if reply.status in {401, 403}:
                raise SiteError(f"danbooru refused the credentials: {message or reply.status}")
            raise SiteError(f"danbooru answered HTTP {reply.status}: {message or 'no JSON'}")
        return [p for p in (self.parse(raw) for raw in data if isinstance(raw, dict)) if p]

    def parse(self, raw: dict) -> Post | None:
        post_id = as_int(raw.get("id"))
        if post_id is None:
            return None
        categories = {cat: str(raw.get(f"tag_string_{cat}") or "").split()
                      for cat in ("general", "character", "copyright", "artist", "meta")}
        return Post(
            site=self.name, id=post_id, md5=valid_md5(raw.get("md5")),
            file_ext=safe_ext(raw.get("file_ext")), file_url=self.url(raw.get("file_url")),
            sample_url=self.url(raw.get("large_file_url")), source=raw.get("source") or None,
            rating=rating_word(raw.get("rating")), score=as_int(raw.get("score")),
            width=as_int(raw.get("image_width")), height=as_int(raw.get("image_height")),
            file_size=as_int(raw.get("file_size")), created_at=_iso(raw.get("created_at")),
            tags=str(raw.get("tag_string") or "").split(), categories=categories,
            deleted=raw.get("is_deleted") is True, banned=raw.get("is_banned") is True,
            parent_id=parent_id(raw.get("parent_id")),
            has_children=as_flag(raw.get("has_children")),
        )


def _iso(value) -> datetime | None:
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except (TypeError, ValueError):
        return None
