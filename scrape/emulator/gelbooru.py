"""Gelbooru 0.2 "dapi": gelbooru.com and safebooru.org, one engine and a two-row dialect table.

    GET /index.php?page=dapi&s=post&q=index   limit, pid (0-based), tags, id, json=1
    GET /index.php?page=dapi&s=tag&q=index    id, limit, after_id, name, names, name_pattern,
                                              order (ASC|DESC), orderby (date|count|name), json=1
    GET /images|samples|thumbnails/...        files, through responses.serve_file

Behaviour of the Gelbooru 0.2 dapi as gelbooru.com and safebooru.org answer: `limit` capped at
100 / 1000, offsets past 20 000 answer 200 text/html "Too deep! ..." (safebooru's limit is
assumed the same), `id:<N` keyset pages are unlimited, pages are cut over all posts and deleted
ones dropped afterwards (short pages mid-way; `count` counts the posts paged over), gelbooru.com
auth per `Emulator.gelbooru_auth`, safebooru lists only general-rated posts.

Knobs on the dialect object, `app[DIALECT]` of each sub-application (tests flip them):
`include_file_url` (False: safebooru's older JSON without file/sample/preview URLs),
`spurious_empty` (fraction of later pages, pid > 0 or an `id:<` search, answered empty on their
first request only), `single_post_object` (gelbooru.com: a one-post page as an object),
`legacy_hash` (JSON before 2021: the md5 in `hash`) and `repeat_tag` (a tag listed twice).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from collections import OrderedDict
from dataclasses import replace

import numpy as np
from aiohttp import web

from . import query as Q
from .gelbooru_posts import (
    AUTH_REASON,
    BUCKET,
    DIALECT,
    FILE_PREFIX,
    FILE_VARIANT,
    GELBOORU,
    MAX_OFFSET,
    SAFEBOORU,
    TOO_DEEP,
    XML_HEAD,
    Dialect,
    escape_text,
    has_sample,
    post_facts,
    sha1_name,
    to_int,
)
from .responses import file_base, serve_file
from .state import EMULATOR, Emulator
from .world import ID_SPAN, RATINGS, Post, World
from .xml_form import attributes_xml


# -- search: pages cut over blocks, totals cached per query --------------------------------
def _id_mask(ranges: list, b: int) -> np.ndarray:
    """Which ids of block b's id span satisfy the query's `id:` terms."""
    ids = np.arange(b * ID_SPAN + 1, (b + 1) * ID_SPAN + 1)
    mask = np.ones(len(ids), dtype=bool)
    for _, op, lo, hi in ranges:
        mask &= Q.compare(ids, op, lo, hi)
    return mask


def page_by_id(world: World, q: Q.Query, match, offset: int, limit: int) -> list[Post]:
    """Posts `offset:offset+limit` in id order, skipping whole blocks by their hit counts."""
    ranges = [r for r in q.ranges if r[0] == "id"]
    blocks = range(world.n_blocks) if q.ascending else range(world.n_blocks - 1, -1, -1)
    out: list[Post] = []
    for b in blocks:
        if len(out) >= limit:
            break
        if ranges and not _id_mask(ranges, b).any():
            continue
        blk = world.block(b)
        hits = np.flatnonzero(match(blk))
        if not q.ascending:
            hits = hits[::-1]
        if offset >= len(hits):
            offset -= len(hits)
            continue
        out += [world.post(int(blk.ids[i])) for i in hits[offset:offset + limit - len(out)]]
        offset = 0
    return out


class Totals:
    """Total hits of searches and tag counts for one site, vectorised over blocks.

    Per-block hit counts of a query without its `id:` terms are kept in a small LRU, so a keyset
    walk (`id:<N`, a new query every page) evaluates only the block that N cuts.
    """

    def __init__(self, world: World, ratings: frozenset[str] | None, size: int = 64):
        self.world = world
        self.ratings = ratings
        self._blocks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._size = size
        self._tags: np.ndarray | None = None

    def count(self, q: Q.Query, status: str) -> int:
        ranges = [r for r in q.ranges if r[0] == "id"]
        rest = replace(q, ranges=[r for r in q.ranges if r[0] != "id"])
        key = (tuple(sorted(rest.include)), tuple(sorted(rest.exclude)),
               None if rest.ratings is None else tuple(sorted(rest.ratings)), status,
               tuple(rest.ranges))
        per_block = self._blocks.get(key)
        if per_block is None:
            match = Q.compile_filter(rest, self.world, status)
            per_block = np.array([int(match(self.world.block(b)).sum())
                                  for b in range(self.world.n_blocks)], dtype=np.int64)
            self._blocks[key] = per_block
            while len(self._blocks) > self._size:
                self._blocks.popitem(last=False)
        self._blocks.move_to_end(key)
        if not ranges:
            return int(per_block.sum())
        match = Q.compile_filter(q, self.world, status)
        total = 0
        for b in range(self.world.n_blocks):
            inside = _id_mask(ranges, b)
            if inside.all():
                total += int(per_block[b])
            elif inside.any():
                total += int(match(self.world.block(b)).sum())
        return total

    def tag_counts(self) -> np.ndarray:
        """Posts per tag, over the site's ratings only."""
        if self.ratings is None:
            return self.world.tag_counts()
        if self._tags is None:
            wanted = [list(RATINGS).index(r) for r in self.ratings]
            n = len(self.world.vocab.names) + 1
            counts = np.zeros(n, dtype=np.int64)
            for b in range(self.world.n_blocks):
                blk = self.world.block(b)
                rows = blk.tags[np.isin(blk.cols["rating"], wanted)]
                counts += np.bincount(rows.ravel() + 1, minlength=n)
            self._tags = counts[1:]
        return self._tags


TOTALS = web.AppKey("totals", Totals)


def _by_md5(emu: Emulator, q: Q.Query, status: str) -> list[Post]:
    """`md5:` searches look in the md5 index (posts some site listed), never render."""
    post = emu.post_by_md5(q.md5)
    if post is None:
        return []
    blk, i = emu.world.locate(post.id)
    return [post] if Q.compile_filter(q, emu.world, status)(blk)[i] else []


def search(emu: Emulator, d: Dialect, totals: Totals, tags: str, limit: int,
           offset: int) -> tuple[list[Post], int]:
    """One page of a tag search and the total it is cut from.

    The page is cut over every matching post, deleted ones included (that is what `count`
    counts), then the deleted posts are dropped, unless the search asked for a `status:`.
    """
    try:
        q = Q.parse(tags)
    except Q.QueryError:
        return [], 0
    if d.ratings is not None:
        q.ratings = set(d.ratings) if q.ratings is None else q.ratings & d.ratings
    status = q.status or "any"
    world = emu.world
    if q.md5:
        page = _by_md5(emu, q, status)
        count, page = len(page), page[offset:offset + limit]
    else:
        count = totals.count(q, status)
        if q.order in {None, "id", "id_asc", "id_desc"}:
            page = page_by_id(world, q, Q.compile_filter(q, world, status), offset, limit)
        else:
            page = Q.search(world, q, limit=limit, offset=offset, default_status=status)
    if q.status is None:
        page = [p for p in page if not p.is_deleted]
    return page, count


def _spurious(request: web.Request, d: Dialect, pid: int, tags: str) -> bool:
    """Safebooru's empty page mid-pagination: a later page, the first request of its URL."""
    emu: Emulator = request.config_dict[EMULATOR]
    url = str(request.rel_url)
    later = pid > 0 or re.search(r"(^|\s)id:<", tags) is not None
    if d.spurious_empty <= 0 or not later or emu.log.attempts[url] != 1:
        return False
    digest = hashlib.blake2b(f"{emu.faults.seed}|spurious_empty|{url}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < d.spurious_empty


# -- responses -------------------------------------------------------------------------------
def php_json(data) -> web.Response:
    """json_encode's form: ASCII only, slashes escaped."""
    text = json.dumps(data, separators=(",", ":")).replace("/", "\\/")
    return web.Response(text=text, content_type="application/json")


def xml_response(body: str) -> web.Response:
    return web.Response(text=XML_HEAD + body, content_type="text/xml", charset="utf-8")


def _elements(name: str, row: dict) -> str:
    inner = "".join(f"<{k}>{html.escape(str(v), quote=False)}</{k}>" for k, v in row.items())
    return f"<{name}>{inner}</{name}>"


def _listing(d: Dialect, root: str, item: str, rows: list[dict], head: dict,
             as_json: bool) -> web.Response:
    """A page of rows in the dialect's JSON or XML form; `head` holds limit/offset/count."""
    if as_json:
        if not d.envelope:
            return php_json(rows) if rows else web.Response(body=b"",
                                                            content_type="application/json")
        body: dict = {"@attributes": head}
        if rows:
            body[item] = rows[0] if len(rows) == 1 and d.single_post_object else rows
        return php_json(body)
    attrs = " ".join(f'{k}="{v}"' for k, v in head.items())
    if d.attribute_xml:
        inner = "".join(attributes_xml(item, row) for row in rows)
    else:
        inner = "".join(_elements(item, row) for row in rows)
    return xml_response(f"<{root} {attrs}>{inner}</{root}>")


def _auth_failure(request: web.Request, d: Dialect) -> web.Response | None:
    emu: Emulator = request.config_dict[EMULATOR]
    if not d.needs_auth or emu.gelbooru_auth == "off":
        return None
    user, key = request.query.get("user_id"), request.query.get("api_key")
    if user is not None and key and emu.accounts.gelbooru.get(user) == key:
        return None
    if emu.gelbooru_auth == "xml":      # the 2022 form: XML and 200, even for json=1
        return xml_response(f'<response success="false" reason="{html.escape(AUTH_REASON)}"/>')
    return web.Response(status=401, text="401 Unauthorized", content_type="text/html")


# -- handlers --------------------------------------------------------------------------------
async def dapi(request: web.Request) -> web.Response:
    d: Dialect = request.app[DIALECT]
    p = request.query
    if p.get("page") != "dapi" or p.get("q") != "index" or p.get("s") not in {"post", "tag"}:
        raise web.HTTPNotFound(text="404 Not Found")
    failure = _auth_failure(request, d)
    if failure is not None:
        return failure
    as_json = p.get("json") == "1"
    if p["s"] == "tag":
        return tags_index(request, d, as_json)
    return await posts_index(request, d, as_json)


async def posts_index(request: web.Request, d: Dialect, as_json: bool) -> web.Response:
    emu: Emulator = request.config_dict[EMULATOR]
    p = request.query
    limit = min(max(to_int(p.get("limit"), 100), 0), d.max_limit)
    pid = max(to_int(p.get("pid"), 0), 0)
    offset = pid * limit
    if offset > MAX_OFFSET:
        return web.Response(text=TOO_DEEP, content_type="text/html")
    tags = p.get("tags", "")
    if "id" in p:
        post = emu.world.post(to_int(p["id"], 0))
        ok = post is not None and not post.is_deleted \
            and (d.ratings is None or post.rating in d.ratings)
        posts, count = ([post], 1) if ok else ([], 0)
    else:
        posts, count = search(emu, d, request.app[TOTALS], tags, limit, offset)
    if posts and _spurious(request, d, pid, tags):
        posts = []
    md5s = await emu.md5s(posts)
    base = file_base(request, d.name)
    render = d.json_post if as_json else d.xml_post
    rows = [render(post, md5, post_facts(post, md5, base, d, emu.world.seed), d)
            for post, md5 in zip(posts, md5s, strict=True)]
    for row in rows:
        if d.legacy_hash and as_json and "md5" in row:
            row["hash"] = row.pop("md5")
        if d.repeat_tag and row["tags"].split():
            row["tags"] = f"{row['tags']} {row['tags'].split()[0]}"
    head = {"limit": limit, "offset": offset, "count": count} if d.envelope \
        else {"count": count, "offset": offset}
    return _listing(d, "posts", "post", rows, head, as_json)


def _like(pattern: str) -> re.Pattern:
    """SQL LIKE (`%` any run, `_` one character) as a regular expression."""
    parts = {"%": ".*", "_": "."}
    return re.compile("".join(parts.get(c, re.escape(c)) for c in pattern), re.IGNORECASE)


def tags_index(request: web.Request, d: Dialect, as_json: bool) -> web.Response:
    emu: Emulator = request.config_dict[EMULATOR]
    vocab, p = emu.world.vocab, request.query
    counts = request.app[TOTALS].tag_counts()
    rows = list(range(len(vocab.names)))
    if "id" in p:
        rows = [i for i in rows if i + 1 == to_int(p["id"], 0)]
    if "after_id" in p:
        rows = [i for i in rows if i + 1 > to_int(p["after_id"], 0)]
    # Names match as stored: HTML-escaped, the form the post API lists (`&gt;_&lt;`); the
    # unescaped `>_<` finds nothing, as on the real sites.
    if "name" in p:
        rows = [i for i in rows if escape_text(vocab.names[i]) == p["name"]]
    if "names" in p:
        wanted = set(p["names"].split())
        rows = [i for i in rows if escape_text(vocab.names[i]) in wanted]
    if "name_pattern" in p:
        like = _like(html.unescape(p["name_pattern"]))
        rows = [i for i in rows if like.fullmatch(vocab.names[i])]
    keys = {"count": lambda i: (counts[i], i), "name": lambda i: vocab.names[i]}
    rows.sort(key=keys.get(p.get("orderby", "").lower(), lambda i: i),
              reverse=p.get("order", "ASC").upper() == "DESC")
    limit = min(max(to_int(p.get("limit"), 100), 0), 1000)
    ambiguous = "false" if d.attribute_xml and not as_json else 0     # 0.2.0 XML says false
    out = [{"id": i + 1, "name": escape_text(vocab.names[i]), "count": int(counts[i]),
            "type": int(vocab.categories[i]), "ambiguous": ambiguous} for i in rows[:limit]]
    head = {"limit": limit, "offset": 0, "count": len(rows)} if d.envelope \
        else {"type": "array"}
    return _listing(d, "tags", "tag", out, head, as_json)


def _post_by_md5(emu: Emulator, a: str, b: str, stem: str) -> Post | None:
    post = emu.post_by_md5(stem)
    return post if post is not None and f"{a}/{b}" == f"{stem[0:2]}/{stem[2:4]}" else None


def _post_by_bucket(emu: Emulator, d: Dialect, directory: int, stem: str) -> Post | None:
    """Safebooru: the post of bucket `directory` whose sha1 name is `stem`."""
    world = emu.world
    lo, hi = (directory - 1) * BUCKET, directory * BUCKET - 1
    for b in range(max((lo - 1) // ID_SPAN, 0), min((hi - 1) // ID_SPAN, world.n_blocks - 1) + 1):
        ids = world.block(b).ids
        for pid in ids[(ids >= lo) & (ids <= hi)].tolist():
            if sha1_name(world.seed, pid) == stem:
                post = world.post(pid)
                ok = post is not None and (d.ratings is None or post.rating in d.ratings)
                return post if ok else None
    return None


async def file(request: web.Request) -> web.StreamResponse:
    emu: Emulator = request.config_dict[EMULATOR]
    d: Dialect = request.app[DIALECT]
    kind, name = request.match_info["kind"], request.match_info["name"]
    stem, _, ext = name.removeprefix(FILE_PREFIX[kind]).rpartition(".")
    if d.bucket_files:
        post = _post_by_bucket(emu, d, int(request.match_info["dir"]), stem)
    else:
        post = _post_by_md5(emu, request.match_info["a"], request.match_info["b"], stem)
    if post is not None and (not name.startswith(FILE_PREFIX[kind])
                             or ext != (post.file_ext if kind == "images" else "jpg")
                             or (kind == "samples" and not has_sample(post))):
        post = None
    return await serve_file(request, post, FILE_VARIANT[kind])


# -- applications ----------------------------------------------------------------------------
def _make(emulator: Emulator, row: Dialect) -> web.Application:
    d = replace(row)                     # knobs are per application
    app = web.Application()
    app[DIALECT] = d
    app[TOTALS] = Totals(emulator.world, d.ratings)
    app.router.add_get("/index.php", dapi)
    kinds = "{kind:images|samples|thumbnails}"
    if d.bucket_files:
        app.router.add_get(rf"/{kinds}/{{dir:\d{{1,7}}}}/{{name}}", file)
    else:
        app.router.add_get(rf"/{kinds}/{{a:[0-9a-f]{{2}}}}/{{b:[0-9a-f]{{2}}}}/{{name}}", file)
    return app


def make_gelbooru(emulator: Emulator) -> web.Application:
    """gelbooru.com, mounted at /gelbooru."""
    return _make(emulator, GELBOORU)


def make_safebooru(emulator: Emulator) -> web.Application:
    """safebooru.org, mounted at /safebooru."""
    return _make(emulator, SAFEBOORU)
