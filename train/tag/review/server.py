"""The review app: aiohttp on 127.0.0.1, a JSON API over a `ReviewStore` and a static page.

    GET  /                  the page (static/index.html, review.js, review.css)
    GET  /api/state         every image's state, the label space, the retrain commands
    GET  /api/image/{id}    one image's state (after a conflict, to reload it)
    GET  /image/{id}        the image file itself
    GET  /api/check?tag=T   {"unknown": [the tags given that tags.csv does not know],
                             "known": {tag: its tags.csv spelling or null}}, asked before a save
    POST /api/edit          {"items": [{"id", "version"}], "add": [tag], "remove": [tag]}
                            -> {"results": [{"status", "image", "unknown", "message"?}]}
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from .store import ReviewStore

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
STORE = web.AppKey("store", ReviewStore)
INFO = web.AppKey("info", dict)
MAX_TAGS = 200            # tags one edit may add or remove


def make_app(store: ReviewStore, info: dict) -> web.Application:
    """The app; `info` goes to the page as is (model, folder, retrain commands)."""
    app = web.Application(client_max_size=1 << 20)
    app[STORE], app[INFO] = store, info
    app.add_routes([web.get("/", _index), web.get("/api/state", _state),
                    web.get("/api/image/{id}", _one), web.get("/image/{id}", _file),
                    web.get("/api/check", _check),
                    web.post("/api/edit", _edit), web.static("/static", STATIC)])
    return app


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def _state(request: web.Request) -> web.Response:
    store = request.app[STORE]
    tags = [[n, store.categories.get(n, 0)] for n in store.names]
    return web.json_response({"images": [store.state(i) for i in range(len(store.images))],
                              "tags": tags, **request.app[INFO]},
                             headers={"Cache-Control": "no-store"})


def _image_id(request: web.Request) -> int:
    store = request.app[STORE]
    try:
        i = int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound(text="no such image") from None
    if not 0 <= i < len(store.images):
        raise web.HTTPNotFound(text="no such image")
    return i


async def _one(request: web.Request) -> web.Response:
    return web.json_response(request.app[STORE].state(_image_id(request)))


async def _file(request: web.Request) -> web.FileResponse:
    return web.FileResponse(request.app[STORE].images[_image_id(request)])


async def _check(request: web.Request) -> web.Response:
    store = request.app[STORE]
    tags = [t for t in map(_clean, request.query.getall("tag", [])) if t][:MAX_TAGS]
    return web.json_response({"unknown": store.unknown(tags),
                              "known": {t: store.known(t) for t in tags}})


async def _edit(request: web.Request) -> web.Response:
    store = request.app[STORE]
    try:
        body = await request.json()
        items = [(int(it["id"]), str(it["version"])) for it in body["items"]]
        add = [_clean(t) for t in body.get("add", [])]
        remove = [_clean(t) for t in body.get("remove", [])]
    except (ValueError, KeyError, TypeError) as exc:
        raise web.HTTPBadRequest(text=f"bad edit: {exc}") from None
    if len(add) + len(remove) > MAX_TAGS or not all(add + remove):
        raise web.HTTPBadRequest(text="bad edit: empty tag or too many tags")
    results = []
    for i, version in items:
        try:
            results.append(store.edit(i, version, add, remove))
        except IndexError:
            results.append({"status": "error", "message": f"no image {i}", "image": None})
    for r in results:
        if r["status"] in ("conflict", "error"):
            log.warning("review: %s", r.get("message"))
    return web.json_response({"results": results})


def _clean(tag) -> str:
    """A tag as it may appear in a caption: one line, no commas, outer spaces stripped."""
    if not isinstance(tag, str):
        raise TypeError("tags are strings")
    return " ".join(tag.replace(",", " ").split())
