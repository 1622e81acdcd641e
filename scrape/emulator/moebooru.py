"""Moebooru (yande.re, konachan): `/post.json|xml`, `/tag.json|xml` and pretty file URLs.

Behaviour copied from the Moebooru source (github.com/moebooru/moebooru):
`limit` defaults to 40 when missing or <= 0 and is capped at 1000 (a `limit:` metatag wins),
`page` is 1-based and clamped to 1..1,000,000 with no depth limit, posts come newest first,
deleted posts are left out unless the query asks for them (`status:deleted`) or names an id,
more than 6 positive or 6 negated tags answer 500, `api_version=2` wraps posts in an envelope
(JSON only: XML answers 424). The two sites differ only by a `MoeSite` (`YANDERE`, `KONACHAN`).

Files: `/image/{md5}/{pretty name}.{ext}`, `/sample/{md5}/{pretty name}.jpg` and
`/data/preview/{md5[0:2]}/{md5[2:4]}/{md5}.jpg`. No post has a separate JPEG version (the
file store has no full-size JPEG of a PNG), so `jpeg_url` is `file_url` for every post, as
Moebooru lists it when there is no JPEG.
"""

from __future__ import annotations

import asyncio
import io
import re
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web
from PIL import Image

from . import query as Q
from . import vocab as V
from .responses import file_base, json_response, ruby_to_i, serve_file
from .state import EMULATOR, Emulator
from .world import Post
from .xml_form import attributes_xml, rails_xml

DEFAULT_LIMIT, MAX_LIMIT, MAX_PAGE = 40, 1000, 1_000_000
TAG_QUERY_LIMIT = 6                 # CONFIG["tag_query_limit"] in Moebooru's default config
TAG_DEFAULT_LIMIT = 50
PRETTY_TAGS_LEN = 150               # Tag.compact_tags(cached_tags, 150) in pretty_file_name
IMAGE_EXTS = {"jpg", "png", "gif"}  # Moebooru's `image?`: everything else gets a stock preview
# Tag types. World categories keep their numbers; a site's extra types (never used by the
# world's tags) take the numbers after them. Their real numbers are site config, unconfirmed.
BASE_TYPES = {V.GENERAL: "general", V.ARTIST: "artist", V.COPYRIGHT: "copyright",
              V.CHARACTER: "character", V.META: "meta"}
_STUB_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@dataclass(frozen=True)
class MoeSite:
    """One Moebooru site: its mount prefix, the prefix of its file names, its extra tag types."""

    prefix: str                     # "yandere": mounted at /yandere
    file_prefix: str                # CONFIG["download_filename_prefix"]
    extra_types: dict[int, str]
    lists_file_ext: bool = True     # Konachan's posts have no `file_ext`: only the URL says

    @property
    def types(self) -> dict[int, str]:
        return {**BASE_TYPES, **self.extra_types}


YANDERE = MoeSite("yandere", "yande.re", {6: "circle", 7: "faults"})
KONACHAN = MoeSite("konachan", "Konachan.com -", {6: "style"}, lists_file_ext=False)
SITE_KEY = web.AppKey("moebooru_site", MoeSite)


@dataclass
class Files:
    """Sizes of a post's files: the original, and the sample when the post has one."""

    size: int
    sample: tuple[int, int, int] | None     # (bytes, width, height)


def page_number(text: str | None) -> int:
    """`page` as Moebooru reads it: 1-based, junk -> 1, clamped to 1..1,000,000."""
    return min(max(ruby_to_i(text), 1), MAX_PAGE)


def post_limit(text: str | None, metatag: int | None = None) -> int:
    """`limit` for /post: a `limit:` metatag wins; <= 0 or missing -> 40; capped at 1000."""
    limit = metatag if metatag is not None else ruby_to_i(text)
    return DEFAULT_LIMIT if limit <= 0 else min(limit, MAX_LIMIT)


def compact_tags(tags: str, max_len: int = PRETTY_TAGS_LEN) -> str:
    """Moebooru's Tag.compact_tags: drop the longest tags until it fits, then sort by name."""
    if len(tags) < max_len:
        return tags
    names = sorted(tags.split(" "), key=len, reverse=True)
    length, dropped = len(tags), 0
    for name in names:
        length -= len(name) + 1
        dropped += 1
        if length <= max_len:
            break
    return " ".join(sorted(names[dropped:]))


def pretty_name(site: MoeSite, post: Post, kind: str = "image") -> str:
    """The percent-encoded file name (no extension): `yande.re%20{id}%20[sample%20]{tags}`."""
    tags = compact_tags(" ".join(post.tag_list)).replace("/", "_")
    words = [site.file_prefix, str(post.id)] + (["sample"] if kind == "sample" else [])
    return quote(" ".join(words + ([tags] if tags else [])), safe="")


def has_sample(post: Post) -> bool:
    """Moebooru makes samples of large static jpg/png images only (no ugoira, no webp)."""
    return post.has_sample and post.file_ext in {"jpg", "png"}


def _reduce_to(width: int, height: int, box: int) -> tuple[int, int]:
    scale = min(1.0, box / width, box / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def rating(post: Post) -> str:
    return "s" if post.rating in {"g", "s"} else post.rating


def _flag_detail(post: Post) -> dict | None:
    if post.status not in {"flagged", "deleted"}:
        return None                 # pending posts: no flag record
    deleted = post.status == "deleted"
    return {"post_id": post.id, "reason": "duplicate" if deleted else "low quality",
            "created_at": post.created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "user_id": None if deleted else post.uploader_id % 1000 + 1,
            "flagged_by": "Anonymous" if deleted else f"user{post.uploader_id % 1000 + 1}"}


def post_json(site: MoeSite, post: Post, md5: str, files: Files, base: str) -> dict:
    """A post object as Moebooru's `api_attributes` renders it."""
    created = int(post.created_at)
    deleted = post.status == "deleted"
    file_url = f"{base}/image/{md5}/{pretty_name(site, post)}.{post.file_ext}"
    image = (file_url, files.size, post.width, post.height)
    sample = image
    if files.sample is not None and not deleted:
        size, width, height = files.sample
        sample = (f"{base}/sample/{md5}/{pretty_name(site, post, 'sample')}.jpg", size, width,
                  height)
    if deleted:
        preview = f"{base}/deleted-preview.png"
    elif post.file_ext in IMAGE_EXTS:
        preview = f"{base}/data/preview/{md5[0:2]}/{md5[2:4]}/{md5}.jpg"
    else:
        preview = f"{base}/download-preview.png"
    is_image = post.file_ext in IMAGE_EXTS
    small = _reduce_to(post.width, post.height, 150) if is_image else (150, 150)
    actual = _reduce_to(post.width, post.height, 300) if is_image else (300, 300)
    data = {
        "id": post.id, "tags": " ".join(post.tag_list), "created_at": created,
        "updated_at": created + post.id * 7919 % (30 * 86400), "creator_id": post.uploader_id,
        "approver_id": None, "author": f"user{post.uploader_id}", "change": post.id + 10**6,
        "source": post.source, "score": post.score, "md5": md5, "file_size": files.size,
        "file_ext": post.file_ext, "file_url": file_url, "is_shown_in_index": not deleted,
        "preview_url": preview, "preview_width": small[0], "preview_height": small[1],
        "actual_preview_width": actual[0], "actual_preview_height": actual[1],
        "sample_url": sample[0], "sample_width": sample[2], "sample_height": sample[3],
        "sample_file_size": sample[1],
        "jpeg_url": image[0], "jpeg_width": image[2], "jpeg_height": image[3],
        "jpeg_file_size": image[1],
        "rating": rating(post), "is_rating_locked": False, "has_children": post.has_children,
        "parent_id": post.parent_id, "status": post.status,
        "is_pending": post.status == "pending", "width": post.width, "height": post.height,
        "is_held": post.is_pending and post.id % 2 == 0,
        "frames_pending_string": "", "frames_pending": [], "frames_string": "", "frames": [],
        "is_note_locked": False, "last_noted_at": 0, "last_commented_at": 0,
    }
    if not site.lists_file_ext:
        del data["file_ext"]
    if deleted:
        for key in ("file_url", "sample_url", "jpeg_url"):
            del data[key]
    if post.status in {"flagged", "deleted", "pending"}:
        data["flag_detail"] = _flag_detail(post)
    return data


def _files(emu: Emulator, post: Post) -> Files:
    """File sizes (renders the files; run off the event loop)."""
    size = len(emu.store.get(post, "original"))
    if not has_sample(post):
        return Files(size, None)
    data = emu.store.get(post, "sample")
    width, height = Image.open(io.BytesIO(data)).size
    return Files(size, (len(data), width, height))


async def _render(request: web.Request, posts: list[Post]) -> list[dict]:
    emu: Emulator = request.config_dict[EMULATOR]
    site = request.app[SITE_KEY]
    base = file_base(request, site.prefix)
    loop = asyncio.get_running_loop()
    md5s = await emu.md5s(posts)
    files = await asyncio.gather(*(loop.run_in_executor(None, _files, emu, p) for p in posts))
    return [post_json(site, p, m, f, base) for p, m, f in zip(posts, md5s, files, strict=True)]


def error(message: str, status: int, fmt: str) -> web.Response:
    """Moebooru's `respond_to_error`: `{"success": false, "reason": ...}`."""
    body = {"success": False, "reason": message}
    if fmt == "xml":
        return web.Response(status=status, text=rails_xml(body, "response"),
                            content_type="application/xml")
    return json_response(body, status=status)


def _xml_value(value) -> str | None:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[]" if not value else " ".join(map(str, value))
    return value


def posts_xml(posts: list[dict], count: int, offset: int) -> str:
    """`<posts count offset><post a="..."/></posts>` (flag_detail, an object, is left out)."""
    rows = "".join("  " + attributes_xml("post", {k: _xml_value(v) for k, v in p.items()
                                                  if k != "flag_detail"}) + "\n"
                   for p in posts)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<posts count="{count}" offset="{offset}">'
            f"\n{rows}</posts>\n")


def _default_status(q: Q.Query) -> str:
    """Deleted posts are left out unless the query names an id (or sets `status:`)."""
    return "any" if any(r[0] == "id" for r in q.ranges) else "visible"


def _count(emu: Emulator, q: Q.Query) -> int:
    match = Q.compile_filter(q, emu.world, _default_status(q))
    return sum(int(match(emu.world.block(b)).sum()) for b in range(emu.world.n_blocks))


async def post_index(request: web.Request) -> web.Response:
    emu: Emulator = request.config_dict[EMULATOR]
    site = request.app[SITE_KEY]
    fmt = request.match_info["fmt"]
    params = request.query
    try:
        q = Q.parse(params.get("tags", ""))
    except Q.QueryError as exc:
        return error(f"Error: {exc}", 500, fmt)
    for terms in (q.include, q.exclude):
        if len(terms) > TAG_QUERY_LIMIT:
            return error(f"Error: You cannot search for more than {TAG_QUERY_LIMIT} tags at a "
                         "time", 500, fmt)
    limit = post_limit(params.get("limit"), q.limit)
    offset = (page_number(params.get("page")) - 1) * limit
    v2 = params.get("api_version") == "2"
    if v2 and fmt != "json":
        return error("V2 API is JSON-only", 424, fmt)
    posts = Q.search(emu.world, q, limit=limit, offset=offset, default_status=_default_status(q),
                     md5_of=emu.store.md5)
    data = await _render(request, posts)
    if fmt == "xml":
        count = len(posts) if q.md5 else _count(emu, q)
        return web.Response(text=posts_xml(data, count, offset), content_type="application/xml")
    if not v2:
        return json_response(data)
    envelope: dict = {"posts": data}
    if params.get("include_pools") == "1":
        envelope.update(pool_posts=[], pools=[])
    if params.get("include_tags") == "1":
        types = site.types
        envelope["tags"] = {name: types[cat] for p in posts
                            for cat, names in p.tags.items() for name in names}
    if params.get("include_votes") == "1":
        envelope["votes"] = {}
    return json_response(envelope)


def _name_filter(name: str):
    """Moebooru's `name LIKE`: `*` is a wildcard over the whole name, else a substring match."""
    if "*" in name:
        pattern = re.compile(".*".join(re.escape(part) for part in name.split("*")))
        return lambda n: pattern.fullmatch(n) is not None
    return lambda n: name in n


async def tag_index(request: web.Request) -> web.Response:
    emu: Emulator = request.config_dict[EMULATOR]
    params, fmt = request.query, request.match_info["fmt"]
    vocab, counts = emu.world.vocab, emu.world.tag_counts()
    rows = range(len(vocab.names))
    if params.get("name"):
        keep = _name_filter(params["name"])
        rows = [i for i in rows if keep(vocab.names[i])]
    if params.get("type"):
        wanted = ruby_to_i(params["type"])
        rows = [i for i in rows if int(vocab.categories[i]) == wanted]
    if params.get("after_id"):
        rows = [i for i in rows if i + 1 >= ruby_to_i(params["after_id"])]
    if params.get("id"):
        rows = [i for i in rows if i + 1 == ruby_to_i(params["id"])]
    order = params.get("order")
    if order == "count":
        rows = sorted(rows, key=lambda i: (-counts[i], i))
    elif order == "date":
        rows = sorted(rows, reverse=True)
    else:
        rows = sorted(rows, key=lambda i: vocab.names[i])
    limit_text = params.get("limit") or None
    if limit_text != "0":
        limit = ruby_to_i(limit_text) if limit_text else TAG_DEFAULT_LIMIT
        limit = limit if limit > 0 else TAG_DEFAULT_LIMIT
        start = (page_number(params.get("page")) - 1) * limit
        rows = rows[start:start + limit]
    tags = [{"id": i + 1, "name": vocab.names[i], "count": int(counts[i]),
             "type": int(vocab.categories[i]), "ambiguous": False} for i in rows]
    if fmt == "xml":
        body = "".join("  " + attributes_xml("tag", {k: _xml_value(v) for k, v in t.items()})
                       + "\n" for t in tags)
        return web.Response(text=f'<?xml version="1.0" encoding="UTF-8"?>\n<tags type="array">'
                            f"\n{body}</tags>\n", content_type="application/xml")
    return json_response(tags)


async def _post_for_file(request: web.Request) -> Post | None:
    """The live post a pretty file URL names: the id from the name, checked against the md5."""
    emu: Emulator = request.config_dict[EMULATOR]
    site = request.app[SITE_KEY]
    name = request.match_info["name"]
    rest = name.removeprefix(site.file_prefix + " ")
    post_id = rest.split(" ", 1)[0].split(".", 1)[0]
    post = emu.world.post(int(post_id)) if rest != name and post_id.isdigit() else None
    if post is None or post.is_deleted or await emu.md5(post) != request.match_info["md5"]:
        return None
    return post


async def image_file(request: web.Request) -> web.StreamResponse:
    post = await _post_for_file(request)
    if post is not None and not request.match_info["name"].endswith("." + post.file_ext):
        post = None
    return await serve_file(request, post, "original")


async def sample_file(request: web.Request) -> web.StreamResponse:
    post = await _post_for_file(request)
    if post is not None and not has_sample(post):
        post = None
    return await serve_file(request, post, "sample", content_type="image/jpeg")


async def preview_file(request: web.Request) -> web.StreamResponse:
    emu: Emulator = request.config_dict[EMULATOR]
    md5 = request.match_info["md5"]
    post = emu.post_by_md5(md5)
    folder = f"{request.match_info['a']}/{request.match_info['b']}"
    if post is not None and (f"{md5[0:2]}/{md5[2:4]}" != folder or post.is_deleted
                             or post.file_ext not in IMAGE_EXTS):
        post = None
    return await serve_file(request, post, "preview", content_type="image/jpeg")


async def stock_preview(request: web.Request) -> web.Response:
    return web.Response(body=_STUB_PNG, content_type="image/png")


def make_app(site: MoeSite) -> web.Application:
    app = web.Application()
    app[SITE_KEY] = site
    for path in ("/post", "/post/index"):
        app.router.add_get(path + ".{fmt:json|xml}", post_index)
    for path in ("/tag", "/tag/index"):
        app.router.add_get(path + ".{fmt:json|xml}", tag_index)
    app.router.add_get(r"/image/{md5:[0-9a-f]{32}}/{name}", image_file)
    app.router.add_get(r"/sample/{md5:[0-9a-f]{32}}/{name}", sample_file)
    app.router.add_get(r"/data/preview/{a:[0-9a-f]{2}}/{b:[0-9a-f]{2}}/{md5:[0-9a-f]{32}}.jpg",
                       preview_file)
    app.router.add_get("/deleted-preview.png", stock_preview)
    app.router.add_get("/download-preview.png", stock_preview)
    return app


def make_yandere(emulator: Emulator) -> web.Application:
    return make_app(YANDERE)


def make_konachan(emulator: Emulator) -> web.Application:
    return make_app(KONACHAN)
