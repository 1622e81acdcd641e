"""Gelbooru 0.2 dapi: gelbooru.com and safebooru.org, one engine, two rows.

Paging is by `pid` until the site's offset limit (20,000), then by `id:<last` keyset with pid 0.
Every answer is sniffed before parsing: JSON, XML (errors come as XML even to `json=1`), an
empty body (safebooru's "no results", and its spurious empty pages, retried), or the "Too deep"
text. Tag categories come from the tag API, looked up once per name and cached.
"""

from __future__ import annotations

import html
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from ..errors import SiteError
from ..post import Post, as_flag, as_int, ext_from_url, parent_id, rating_word, valid_md5
from .base import Site

log = logging.getLogger(__name__)
TYPES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta", 6: "general"}
MAX_OFFSET = 20_000
EMPTY_RETRIES = 2


class Gelbooru(Site):
    name = "gelbooru"
    base_url = "https://gelbooru.com"
    rate = 2.0
    burst = 4
    page_size = 100
    credential_vars = ("GELBOORU_USER_ID", "GELBOORU_API_KEY")

    def _params(self, **params) -> dict:
        params = {"page": "dapi", "q": "index", "json": "1", **params}
        if self.credentials:
            params["user_id"], params["api_key"] = self.credentials
        return params

    async def pages(self, tags: str) -> AsyncIterator[list[Post]]:
        sorted_search = "sort:" in tags.lower()
        pid, before, last_id = 0, None, None    # before: the id:< keyset (None: by offset)
        while True:
            if before is None and (pid + 1) * self.page_size > MAX_OFFSET:
                if sorted_search or last_id is None:
                    log.warning("%s: a sorted search stops at offset %d", self.name, MAX_OFFSET)
                    return
                before, pid = last_id, 0
            search = tags if before is None else f"{tags} id:<{before}".strip()
            raws, total = await self._listing(search, pid, retry_empty=pid > 0 or
                                              before is not None)
            if raws is None:                    # "Too deep": go on by keyset
                if sorted_search or last_id is None:
                    return
                before, pid = last_id, 0
                continue
            if not raws:
                return
            posts = [p for p in (self.parse(r) for r in raws) if p]
            await self._categorise(posts)
            yield posts
            last_id = min((p.id for p in posts), default=last_id)
            if total is None and len(raws) < self.page_size // 2:
                return                          # no count to go by: a short page is the end
            if before is not None:
                before = last_id
            else:
                pid += 1
                if total is not None and pid * self.page_size >= total:
                    return

    async def _listing(self, tags: str, pid: int, retry_empty: bool):
        """(raw posts, total count or None); (None, None) for the "Too deep" answer."""
        for attempt in range(EMPTY_RETRIES + 1):
            reply = await self.client.get(
                f"{self.base}/index.php",
                params=self._params(s="post", limit=self.page_size, pid=pid, tags=tags),
                ok_statuses=frozenset({200}))
            if reply.status in {401, 403}:
                raise SiteError(f"{self.name} requires an API key: set "
                                f"{self.credential_vars[0]} and {self.credential_vars[1]} "
                                f"(HTTP {reply.status})")
            if reply.status != 200:
                raise SiteError(f"{self.name} answered HTTP {reply.status}")
            text = reply.body.decode("utf-8", "replace").strip()
            if text.startswith("Too deep"):
                return None, None
            raws, total = parse_listing(text, self.name)
            if raws or not retry_empty or attempt == EMPTY_RETRIES:
                return raws, total
            log.info("%s: empty page at pid %d, retrying", self.name, pid)
            await self.client.clock.sleep(self.client.backoff * (attempt + 1))
        return [], None

    def parse(self, raw: dict) -> Post | None:
        post_id = as_int(raw.get("id"))
        if post_id is None:
            return None
        directory, image = str(raw.get("directory") or ""), str(raw.get("image") or "")
        file_url = raw.get("file_url") or (
            f"{self.base}/images/{directory}/{image}" if directory and image else None)
        site_names = str(raw.get("tags") or "").split()     # HTML-escaped, as stored
        sample_url = raw.get("sample_url") or None
        if not sample_url and raw.get("sample") in {True, "1", "true"} and image:
            sample_url = f"{self.base}/samples/{directory}/sample_{image.rsplit('.', 1)[0]}.jpg"
        return Post(
            site=self.name, id=post_id, md5=valid_md5(raw.get("md5") or raw.get("hash")),
            file_ext=ext_from_url(file_url or image), file_url=self.url(file_url),
            sample_url=self.url(sample_url),
            source=html.unescape(str(raw.get("source") or "")) or None,
            rating=rating_word(raw.get("rating")), score=as_int(raw.get("score")),
            width=as_int(raw.get("width")), height=as_int(raw.get("height")),
            file_size=None, created_at=_created(raw.get("created_at")),
            tags=[html.unescape(t) for t in site_names],
            deleted=str(raw.get("status", "")).lower() == "deleted",
            extra={"site_names": {html.unescape(t): t for t in site_names}},
            parent_id=parent_id(raw.get("parent_id")),
            has_children=as_flag(raw.get("has_children")),
        )

    async def _categorise(self, posts: list[Post]) -> None:
        site_names = {t: p.extra.get("site_names", {}).get(t, t) for p in posts for t in p.tags}
        names = sorted(site_names)
        known = self.tag_cache.get(names) if self.tag_cache else {}
        missing = [n for n in names if n not in known]
        for i in range(0, len(missing), 100):
            chunk = missing[i:i + 100]
            # The tag API matches names as the site stores them: HTML-escaped (`&gt;_&lt;`),
            # the form the post API lists, not the unescaped name.
            reply = await self.client.get(f"{self.base}/index.php", params=self._params(
                s="tag", names=" ".join(site_names[n] for n in chunk), limit=len(chunk)))
            if reply.status != 200:             # general for now; asked again next run
                log.warning("%s: tag API answered HTTP %d", self.name, reply.status)
                known.update(dict.fromkeys(chunk, "general"))
                continue
            found = parse_tags(reply.body.decode("utf-8", "replace"))
            found = {n: found.get(n, "general") for n in chunk}
            known.update(found)
            if self.tag_cache:
                self.tag_cache.put(found)
        for post in posts:
            post.categories = {c: [] for c in ("general", "character", "copyright", "artist",
                                               "meta")}
            for tag in post.tags:
                post.categories[known.get(tag, "general")].append(tag)


class Safebooru(Gelbooru):
    name = "safebooru"
    base_url = "https://safebooru.org"
    page_size = 1000
    credential_vars = ("SAFEBOORU_USER_ID", "SAFEBOORU_API_KEY")


def parse_listing(text: str, site: str) -> tuple[list[dict], int | None]:
    """Posts and total from a dapi answer in any of its forms (JSON, XML, empty)."""
    if not text:
        return [], None
    if text[0] in "[{":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SiteError(f"{site} sent malformed JSON: {exc}") from None
        if isinstance(data, list):
            return [d for d in data if isinstance(d, dict)], None
        total = as_int((data.get("@attributes") or {}).get("count"))
        posts = data.get("post", [])
        return ([posts] if isinstance(posts, dict) else
                [d for d in posts if isinstance(d, dict)]), total
    if text[0] == "<":
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise SiteError(f"{site} sent malformed XML: {exc}") from None
        if root.tag == "response" and root.get("success") == "false":
            raise SiteError(f"{site} refused the request: {root.get('reason')}")
        if root.tag == "error":
            raise SiteError(f"{site} refused the request: {root.text}")
        posts = [dict(p.attrib) or {c.tag: c.text for c in p} for p in root.iter("post")]
        return posts, as_int(root.get("count"))
    raise SiteError(f"{site} sent an unexpected answer: {text[:80]!r}")


def parse_tags(text: str) -> dict[str, str]:
    """name -> category from a tag API answer (JSON envelope, bare array or XML)."""
    text = text.strip()
    rows: list[dict] = []
    if text[:1] in "[{":
        data = json.loads(text)
        rows = data if isinstance(data, list) else data.get("tag", [])
        rows = [rows] if isinstance(rows, dict) else rows
    elif text[:1] == "<":
        rows = [dict(t.attrib) or {c.tag: c.text for c in t} for t in ET.fromstring(text)]
    return {html.unescape(str(r.get("name"))): TYPES.get(as_int(r.get("type")), "general")
            for r in rows if isinstance(r, dict) and r.get("name")}


def _created(value) -> datetime | None:
    try:
        return datetime.strptime(str(value), "%a %b %d %H:%M:%S %z %Y").astimezone(UTC)
    except ValueError:
        return None
