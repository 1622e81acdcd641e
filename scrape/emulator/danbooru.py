"""Danbooru v2: `/posts.json`, `/posts/{id}.json`, `/tags.json`, `/counts/posts.json`, CDN paths.

Behaviour copied from the Danbooru source (github.com/danbooru/danbooru):
`limit` clamped to 1..200 (default 20), numbered pages past the user's page limit answer 410,
`b<id>`/`a<id>` keyset pages (unlimited, ignore `order:`, `a` pages listed newest first), more
than 2 counted tags for anonymous users and members answer 422, hidden posts lose their URLs
and md5, deleted posts are listed, timestamps carry US Eastern offsets.
"""

from __future__ import annotations

import asyncio
import base64
import re
from datetime import datetime
from zoneinfo import ZoneInfo

from aiohttp import web

from . import query as Q
from . import vocab as V
from .responses import file_base, json_response, ruby_to_i, serve_file
from .state import EMULATOR, Emulator
from .world import Post
from .xml_form import rails_xml

EASTERN = ZoneInfo("America/New_York")
LEVELS = {"anonymous": (2, 1000), "member": (2, 1000), "gold": (6, 5000),
          "platinum": (None, 5000)}
def error(status: int, exc: str, message: str, fmt: str = "json") -> web.Response:
    body = {"success": False, "error": exc, "message": message,
            "backtrace": ["app/controllers/application_controller.rb:118:in `rescue_exception'"]}
    if fmt == "xml":
        return web.Response(status=status, text=rails_xml(body, "result"),
                            content_type="application/xml")
    return json_response(body, status=status)


def timestamp(dt: datetime) -> str:
    local = dt.astimezone(EASTERN)
    text = local.isoformat(timespec="milliseconds")
    return text


def _user_level(request: web.Request) -> tuple[str, web.Response | None]:
    emu: Emulator = request.config_dict[EMULATOR]
    login, key = request.query.get("login"), request.query.get("api_key")
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Basic "):
        try:
            login, _, key = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return "anonymous", error(401, "SessionLoader::AuthenticationFailure",
                                      "Invalid API key")
    if login is None and key is None:
        return "anonymous", None
    if not login or not key:
        return "anonymous", error(401, "SessionLoader::AuthenticationFailure",
                                  "Missing `login` or `api_key`")
    account = emu.accounts.danbooru.get(login)
    if account is None or account[0] != key:
        return "anonymous", error(401, "SessionLoader::AuthenticationFailure", "Invalid API key")
    return account[1], None


def _visible(post: Post, level: str, safe_mode: bool) -> bool:
    if post.is_banned:
        return False
    if post.restricted and level in {"anonymous", "member"}:
        return False
    return not (safe_mode and post.rating != "g")


def _file_urls(base: str, post: Post, md5: str) -> dict:
    d = f"{md5[0:2]}/{md5[2:4]}"
    original = f"{base}/original/{d}/{md5}.{post.file_ext}"
    if post.file_ext == "swf":
        preview = f"{base}/images/flash-preview.png"
    else:
        preview = f"{base}/180x180/{d}/{md5}.jpg"
    sample_ext = "webm" if post.file_ext == "zip" else "jpg"
    large = f"{base}/sample/{d}/sample-{md5}.{sample_ext}" if post.has_sample else original
    return {"file_url": original, "large_file_url": large, "preview_file_url": preview}


def _variants(base: str, post: Post, md5: str) -> list[dict]:
    d = f"{md5[0:2]}/{md5[2:4]}"
    out = []
    for kind, box, ext in (("180x180", 180, "jpg"), ("360x360", 360, "jpg"),
                           ("720x720", 720, "webp")):
        scale = min(1.0, box / max(post.width, post.height))
        out.append({"type": kind, "url": f"{base}/{kind}/{d}/{md5}.{ext}",
                    "width": round(post.width * scale), "height": round(post.height * scale),
                    "file_ext": ext})
    if post.has_sample:
        ext = "webm" if post.file_ext == "zip" else "jpg"
        out.append({"type": "sample", "url": f"{base}/sample/{d}/sample-{md5}.{ext}",
                    "width": 850, "height": round(post.height * 850 / post.width),
                    "file_ext": ext})
    out.append({"type": "original", "url": f"{base}/original/{d}/{md5}.{post.file_ext}",
                "width": post.width, "height": post.height, "file_ext": post.file_ext})
    return out


def post_json(post: Post, md5: str, base: str, visible: bool, file_size: int) -> dict:
    """A post object as Danbooru's API renders it."""
    created = timestamp(post.created)
    tags = post.tags
    data = {
        "id": post.id, "created_at": created, "updated_at": created,
        "uploader_id": post.uploader_id, "approver_id": None, "score": post.score,
        "source": post.source, "md5": md5, "last_comment_bumped_at": None,
        "rating": post.rating, "image_width": post.width, "image_height": post.height,
        "tag_string": " ".join(post.tag_list), "fav_count": post.fav_count,
        "file_ext": post.file_ext, "last_noted_at": None, "parent_id": post.parent_id,
        "has_children": post.has_children,
        "tag_count_general": len(tags[V.GENERAL]), "tag_count_artist": len(tags[V.ARTIST]),
        "tag_count_character": len(tags[V.CHARACTER]),
        "tag_count_copyright": len(tags[V.COPYRIGHT]), "file_size": file_size,
        "up_score": post.up_score, "down_score": post.down_score, "is_pending": post.is_pending,
        "is_flagged": post.is_flagged, "is_deleted": post.is_deleted,
        "tag_count": len(post.tag_list), "is_banned": post.is_banned,
        "pixiv_id": _pixiv_id(post.source), "last_commented_at": None,
        "has_active_children": post.has_children, "bit_flags": 0,
        "tag_count_meta": len(tags[V.META]),
        "has_large": post.has_sample, "has_visible_children": post.has_children,
        "media_asset": {"id": post.id + 1_000_000, "created_at": created, "updated_at": created,
                        "md5": md5, "file_ext": post.file_ext, "file_size": file_size,
                        "image_width": post.width, "image_height": post.height,
                        "duration": 2.5 if post.file_ext in {"mp4", "webm", "zip"} else None,
                        "status": "active", "file_key": md5[:9], "is_public": True,
                        "pixel_hash": md5[::-1], "variants": _variants(base, post, md5)},
        "tag_string_general": " ".join(tags[V.GENERAL]),
        "tag_string_character": " ".join(tags[V.CHARACTER]),
        "tag_string_copyright": " ".join(tags[V.COPYRIGHT]),
        "tag_string_artist": " ".join(tags[V.ARTIST]),
        "tag_string_meta": " ".join(tags[V.META]),
    }
    if visible:
        data.update(_file_urls(base, post, md5))
    else:
        del data["md5"]
        for key in ("md5", "file_key", "variants"):
            del data["media_asset"][key]
    return data


def _pixiv_id(source: str) -> int | None:
    m = re.search(r"pixiv\.net/artworks/(\d+)", source)
    return int(m.group(1)) if m else None


def _base(request: web.Request) -> str:
    return file_base(request, "danbooru")


async def _render(request: web.Request, posts: list[Post], level: str) -> list[dict]:
    emu: Emulator = request.config_dict[EMULATOR]
    safe = request.query.get("safe_mode", "").lower() in {"true", "1", "yes"}
    md5s = await emu.md5s(posts)
    out = []
    for post, md5 in zip(posts, md5s, strict=True):
        size = len(emu.store.get(post, "original"))
        out.append(post_json(post, md5, _base(request), _visible(post, level, safe), size))
    return out


def _respond(data, fmt: str, root: str) -> web.Response:
    if fmt == "xml":
        return web.Response(text=rails_xml(data, root), content_type="application/xml")
    return json_response(data)


async def posts_index(request: web.Request) -> web.Response:
    emu: Emulator = request.config_dict[EMULATOR]
    fmt = request.match_info.get("fmt", "json")
    if "cause_error" in request.query:
        status = ruby_to_i(request.query["cause_error"])
        if 400 <= status <= 599:
            return error(status, "Exception", request.query.get("message", "cause_error"), fmt)
    level, failure = _user_level(request)
    if failure is not None:
        return failure
    tag_limit, page_limit = LEVELS[level]
    try:
        q = Q.parse(request.query.get("tags", ""))
    except Q.QueryError as exc:
        return error(422, "PostQuery::Error", str(exc), fmt)
    plain_single = len(q.include) + len(q.exclude) == 1 and q.counted == 1
    if tag_limit is not None and q.counted > tag_limit and not plain_single:
        return error(422, "PostQuery::TagLimitError",
                     f"You cannot search for more than {tag_limit} tags at a time.", fmt)
    if "md5" in request.query:
        q.md5 = request.query["md5"].lower()
        known = emu.post_by_md5(q.md5)
        # An md5 never listed means rendering the world to find it: off the event loop.
        posts = [known] if known else await asyncio.get_running_loop().run_in_executor(
            None, lambda: Q.search(emu.world, q, limit=1, md5_of=emu.store.md5))
        if not posts:
            return error(404, "ActiveRecord::RecordNotFound", "That record was not found.", fmt)
        return _respond((await _render(request, posts, level))[0], fmt, "post")
    if "limit" in request.query:
        limit = ruby_to_i(request.query["limit"])
    else:
        limit = q.limit if q.limit is not None else 20
    limit = min(max(limit, 1), 200)
    page = request.query.get("page", "1")
    seq = re.match(r"^([ab])(\d+)$", page, re.IGNORECASE)
    if seq:
        kind, ref = seq.group(1).lower(), int(seq.group(2))
        if kind == "b":
            posts = Q.search(emu.world, q, limit=limit, before=ref)
        else:
            posts = Q.search(emu.world, q, limit=limit, after=ref)[::-1]
    else:
        number = max(ruby_to_i(page, 1), 1)
        if number > page_limit:
            return error(410, "PaginationExtension::PaginationError",
                         f"You cannot go beyond page {page_limit}.", fmt)
        posts = Q.search(emu.world, q, limit=limit, offset=(number - 1) * limit)
    return _respond(await _render(request, posts, level), fmt, "posts")


async def posts_show(request: web.Request) -> web.Response:
    emu: Emulator = request.config_dict[EMULATOR]
    fmt = request.match_info.get("fmt", "json")
    level, failure = _user_level(request)
    if failure is not None:
        return failure
    post = emu.world.post(ruby_to_i(request.match_info["id"]))
    if post is None:
        return error(404, "ActiveRecord::RecordNotFound", "That record was not found.", fmt)
    return _respond((await _render(request, [post], level))[0], fmt, "post")


async def counts(request: web.Request) -> web.Response:
    emu: Emulator = request.config_dict[EMULATOR]
    q = Q.parse(request.query.get("tags", ""))
    match = Q.compile_filter(q, emu.world)
    total = sum(int(match(emu.world.block(b)).sum()) for b in range(emu.world.n_blocks))
    return json_response({"counts": {"posts": total}})


async def tags_index(request: web.Request) -> web.Response:
    emu: Emulator = request.config_dict[EMULATOR]
    params = request.query
    blank = [k for k, v in params.items() if k.startswith("search[") and v == ""]
    if blank:
        kept = [(k, v) for k, v in params.items() if k not in blank]
        raise web.HTTPFound(request.rel_url.with_query(kept))
    vocab, counts_ = emu.world.vocab, emu.world.tag_counts()
    rows = range(len(vocab.names))
    if "search[name]" in params:
        rows = [i for i in rows if vocab.names[i] == params["search[name]"]]
    if "search[name_comma]" in params:
        wanted = set(params["search[name_comma]"].split(","))
        rows = [i for i in rows if vocab.names[i] in wanted]
    if "search[name_matches]" in params:
        pattern = params["search[name_matches]"]
        rows = [i for i in rows if Q.fnmatch.fnmatchcase(vocab.names[i], pattern)]
    if "search[category]" in params:
        cats = {ruby_to_i(c) for c in params["search[category]"].split(",")}
        rows = [i for i in rows if int(vocab.categories[i]) in cats]
    if params.get("search[hide_empty]", "").lower() in {"true", "yes", "1"}:
        rows = [i for i in rows if counts_[i] > 0]
    order = params.get("search[order]", "date")
    rows = list(rows)
    if order == "count":
        rows.sort(key=lambda i: (-counts_[i], -i))
    elif order == "name":
        rows.sort(key=lambda i: vocab.names[i])
    else:
        rows.sort(reverse=True)
    limit = min(max(ruby_to_i(params.get("limit"), 20), 1), 1000)
    page = max(ruby_to_i(params.get("page"), 1), 1)
    if page > 1000:
        return error(410, "PaginationExtension::PaginationError",
                     "You cannot go beyond page 1000.")
    created = timestamp(datetime.fromtimestamp(1_200_000_000))
    out = [{"id": i + 1, "name": vocab.names[i], "post_count": int(counts_[i]),
            "category": int(vocab.categories[i]), "created_at": created, "updated_at": created,
            "is_deprecated": False, "words": vocab.names[i].split("_")}
           for i in rows[(page - 1) * limit: page * limit]]
    return _respond(out, request.match_info.get("fmt", "json"), "tags")


async def file(request: web.Request) -> web.StreamResponse:
    emu: Emulator = request.config_dict[EMULATOR]
    variant = request.match_info["variant"]
    name = request.match_info["name"]
    md5 = name.removeprefix("sample-").rsplit(".", 1)[0]
    post = emu.post_by_md5(md5)
    folder = f"{request.match_info['a']}/{request.match_info['b']}"
    if post is not None and f"{md5[0:2]}/{md5[2:4]}" != folder:
        post = None
    kind = {"original": "original", "sample": "sample"}.get(variant, "preview")
    if post is not None and kind == "sample" and not post.has_sample:
        post = None
    return await serve_file(request, post, kind)


async def flash_preview(request: web.Request) -> web.Response:
    return web.Response(body=b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, content_type="image/png")


def make_app(emulator: Emulator) -> web.Application:
    app = web.Application()
    app.router.add_get(r"/posts.{fmt:json|xml}", posts_index)
    app.router.add_get(r"/posts/{id:\d+}.{fmt:json|xml}", posts_show)
    app.router.add_get(r"/tags.{fmt:json|xml}", tags_index)
    app.router.add_get("/counts/posts.json", counts)
    app.router.add_get("/images/flash-preview.png", flash_preview)
    app.router.add_get(r"/{variant:original|sample|180x180|360x360|720x720}/{a:[0-9a-f]{2}}"
                       r"/{b:[0-9a-f]{2}}/{name}", file)
    return app
