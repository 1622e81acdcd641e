"""The emulator's aiohttp application: one world, one sub-application per site prefix.

    request ─▶ fault_middleware (log, UA filter, rate limit, injected faults)
            ─▶ /danbooru | /gelbooru | /safebooru | /yandere | /konachan   (site dialects)
            ─▶ /_emulator/...   (control: info, visual tags, request log, faults)

Sites render posts from `World` and serve files from `FileStore` through `serve_file`, which
implements Content-Length, ETag, Range (206/416) and the file faults.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
import re
from dataclasses import dataclass, field

from aiohttp import web

from .faults import (
    FAULT,
    FaultConfig,
    FileGate,
    RequestLog,
    TokenBucket,
    config_dict,
    fault_middleware,
)
from .files import FileStore
from .world import Post, World


@dataclass
class Accounts:
    """API users. Danbooru-style `login -> (api_key, level)`; Gelbooru `user_id -> api_key`."""

    danbooru: dict[str, tuple[str, str]] = field(default_factory=lambda: {
        "member": ("member-key", "member"), "gold": ("gold-key", "gold")})
    gelbooru: dict[str, str] = field(default_factory=lambda: {"1234": "gelbooru-key"})


@dataclass
class Emulator:
    world: World
    store: FileStore
    faults: FaultConfig
    accounts: Accounts = field(default_factory=Accounts)
    gelbooru_auth: str = "off"          # off | 401 (gelbooru.com since 2025) | xml (2022 form)
    log: RequestLog = field(default_factory=RequestLog)
    bucket: TokenBucket = field(default_factory=TokenBucket)
    gate: FileGate = field(default_factory=FileGate)
    md5_index: dict[str, int] = field(default_factory=dict)
    files_url: str = ""                 # "http://127.0.0.1:PORT": files listed on a second
                                        # address, as the real sites list a CDN host; "": the
                                        # API's own address

    async def md5(self, post: Post) -> str:
        """The md5 of a post's original, rendered off the event loop the first time."""
        digest = await asyncio.get_running_loop().run_in_executor(None, self.store.md5, post)
        self.md5_index[digest] = post.id
        return digest

    async def md5s(self, posts: list[Post]) -> list[str]:
        return list(await asyncio.gather(*(self.md5(p) for p in posts)))

    def post_by_md5(self, digest: str) -> Post | None:
        pid = self.md5_index.get(digest)
        return None if pid is None else self.world.post(pid)


EMULATOR = web.AppKey("emulator", Emulator)


def file_base(request: web.Request, prefix: str) -> str:
    """Where a site's listed file URLs point: the files address if set, else the API's."""
    emu: Emulator = request.config_dict[EMULATOR]
    root = emu.files_url or f"{request.scheme}://{request.host}"
    return f"{root}/{prefix}"


async def serve_file(request: web.Request, post: Post | None, variant: str,
                     content_type: str | None = None) -> web.StreamResponse:
    """Serve one variant of a post's file with ETag, Range and the file faults."""
    if post is None:
        raise web.HTTPNotFound(text="404 Not Found")
    emu: Emulator = request.app[EMULATOR]
    data = await asyncio.get_running_loop().run_in_executor(None, emu.store.get, post, variant)
    fault = request.get(FAULT)
    if fault == "md5_mismatch":
        data = data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) \
            + data[len(data) // 2 + 1:]
    etag = '"' + hashlib.md5(data).hexdigest() + '"'
    ctype = content_type or mimetypes.guess_type(request.path)[0] or "application/octet-stream"
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "max-age=31536000"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    status, body = 200, data
    range_header = request.headers.get("Range")
    if range_header:
        span = _parse_range(range_header, len(data))
        if span is None:
            return web.Response(status=416, headers={**headers,
                                                     "Content-Range": f"bytes */{len(data)}"})
        start, end = span
        status, body = 206, data[start:end + 1]
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
    if fault == "truncate":
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = ctype
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body[: len(body) // 2])
        request.transport.close()
        return response
    return web.Response(status=status, body=body, content_type=ctype, headers=headers)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), (int(last) if last else size - 1)
    except ValueError:
        return None
    if start >= size or start > end:
        return None
    return start, min(end, size - 1)


_RUBY_INT = re.compile(r"^\s*([-+]?\d+)")


def ruby_to_i(text: str | None, default: int = 0) -> int:
    """Ruby's String#to_i, as the Rails sites (Danbooru, Moebooru) read numbers: the leading
    integer, or 0; `default` when the parameter is absent."""
    if text is None:
        return default
    m = _RUBY_INT.match(text)
    return int(m.group(1)) if m else 0


def json_response(data, status: int = 200, **kwargs) -> web.Response:
    return web.Response(status=status, text=json.dumps(data, ensure_ascii=False),
                        content_type="application/json", **kwargs)


# -- control endpoints ---------------------------------------------------------------------
async def _info(request: web.Request) -> web.Response:
    emu: Emulator = request.app[EMULATOR]
    w = emu.world
    return json_response({"seed": w.seed, "posts": w.n_posts, "max_id": w.max_id,
                          "image_scale": w.image_scale, "tags": len(w.vocab.names),
                          "visual_tags": w.visual_tags(), "faults": config_dict(emu.faults),
                          "sites": list(SITES)})


async def _visual(request: web.Request) -> web.Response:
    return json_response(request.app[EMULATOR].world.visual_tags())


async def _log(request: web.Request) -> web.Response:
    log: RequestLog = request.app[EMULATOR].log
    since = int(request.query.get("since", 0))
    return json_response([e for e in log.entries if e["n"] > since])


async def _faults(request: web.Request) -> web.Response:
    emu: Emulator = request.app[EMULATOR]
    if request.method == "POST":
        try:
            emu.faults.update(await request.json())
        except (ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, status=400)
        emu.log.attempts.clear()
    return json_response(config_dict(emu.faults))


def _site_modules():
    from . import danbooru, gelbooru, moebooru
    return {"danbooru": danbooru.make_app, "gelbooru": gelbooru.make_gelbooru,
            "safebooru": gelbooru.make_safebooru, "yandere": moebooru.make_yandere,
            "konachan": moebooru.make_konachan}


SITES = ("danbooru", "gelbooru", "safebooru", "yandere", "konachan")


def make_app(emulator: Emulator) -> web.Application:
    """The whole emulator as one aiohttp application."""
    app = web.Application(middlewares=[fault_middleware])
    app[EMULATOR] = emulator
    app.router.add_get("/_emulator/info", _info)
    app.router.add_get("/_emulator/visual-tags", _visual)
    app.router.add_get("/_emulator/log", _log)
    app.router.add_route("*", "/_emulator/faults", _faults)
    for name, factory in _site_modules().items():
        sub = factory(emulator)
        sub[EMULATOR] = emulator
        app.add_subapp(f"/{name}", sub)
    return app
