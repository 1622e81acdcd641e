"""Moebooru (yande.re, konachan): numbered pages; tag categories via `include_tags`.

`api_version=2&include_tags=1` answers `{"posts": [...], "tags": {name: type}}`, so one request
gives both the posts and their categories. Moebooru's `s` rating means "safe" (today's general
and sensitive together) and is mapped to general.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from ..errors import SiteError
from ..post import Post, as_flag, as_int, parent_id, rating_word, safe_ext, valid_md5
from .base import Site

PAGE = 100
TYPE_NAMES = {"general": "general", "artist": "artist", "copyright": "copyright",
              "character": "character", "meta": "meta", "circle": "artist", "faults": "meta",
              "style": "general"}


class Moebooru(Site):
    rate = 2.0
    burst = 4

    async def pages(self, tags: str) -> AsyncIterator[list[Post]]:
        page = 1
        while True:
            reply, data = await self.get_json("/post.json", {
                "tags": tags, "limit": PAGE, "page": page, "api_version": 2,
                "include_tags": 1}, final=_json_error)
            if reply.status != 200 or not isinstance(data, dict):
                reason = data.get("reason") if isinstance(data, dict) else None
                raise SiteError(f"{self.name} refused the search: "
                                f"{reason or f'HTTP {reply.status}'}")
            raws = [r for r in data.get("posts") or [] if isinstance(r, dict)]
            types = data.get("tags") if isinstance(data.get("tags"), dict) else {}
            posts = [p for p in (self.parse(r, types) for r in raws) if p]
            if posts:
                yield posts
            if len(raws) < PAGE:
                return
            page += 1

    def parse(self, raw: dict, types: dict) -> Post | None:
        post_id = as_int(raw.get("id"))
        if post_id is None:
            return None
        tags = str(raw.get("tags") or "").split()
        categories = {c: [] for c in ("general", "character", "copyright", "artist", "meta")}
        for tag in tags:
            categories[TYPE_NAMES.get(str(types.get(tag, "general")), "general")].append(tag)
        rating = raw.get("rating")
        created = as_int(raw.get("created_at"))
        return Post(
            site=self.name, id=post_id, md5=valid_md5(raw.get("md5")),
            file_ext=safe_ext(raw.get("file_ext")), file_url=self.url(raw.get("file_url")),
            sample_url=self.url(raw.get("sample_url")), source=raw.get("source") or None,
            rating="general" if rating == "s" else rating_word(rating),
            score=as_int(raw.get("score")), width=as_int(raw.get("width")),
            height=as_int(raw.get("height")), file_size=as_int(raw.get("file_size")),
            created_at=datetime.fromtimestamp(created, UTC) if created else None,
            tags=tags, categories=categories,
            deleted=str(raw.get("status", "")).lower() == "deleted",
            parent_id=parent_id(raw.get("parent_id")),
            has_children=as_flag(raw.get("has_children")),
        )


def _json_error(reply) -> bool:
    """Moebooru answers query errors (too many tags) with HTTP 500 and a JSON reason."""
    return reply.status == 500 and reply.body.lstrip().startswith(b"{")


class Yandere(Moebooru):
    name = "yandere"
    base_url = "https://yande.re"


class Konachan(Moebooru):
    name = "konachan"
    base_url = "https://konachan.com"
