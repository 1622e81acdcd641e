"""The emulator's aiohttp application: one world, one sub-application per site prefix.

    request ─▶ fault_middleware (log, UA filter, rate limit, injected faults)
            ─▶ /danbooru | /gelbooru | /safebooru | /yandere | /konachan   (:mod:`.sites`)
            ─▶ /_emulator/...   (control: info, visual tags, request log, faults)

Sites render posts from `World` and serve files from `FileStore` through
:func:`.responses.serve_file`, which implements Content-Length, ETag, Range (206/416) and the
file faults.
"""

from __future__ import annotations

from aiohttp import web

from .faults import RequestLog, config_dict
from .middleware import fault_middleware
from .responses import json_response
from .sites import SITES
from .state import EMULATOR, Emulator


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


def make_app(emulator: Emulator) -> web.Application:
    """The whole emulator as one aiohttp application."""
    app = web.Application(middlewares=[fault_middleware])
    app[EMULATOR] = emulator
    app.router.add_get("/_emulator/info", _info)
    app.router.add_get("/_emulator/visual-tags", _visual)
    app.router.add_get("/_emulator/log", _log)
    app.router.add_route("*", "/_emulator/faults", _faults)
    for name, site in SITES.items():
        sub = site.make_app(emulator)
        sub[EMULATOR] = emulator
        app.add_subapp(f"/{name}", sub)
    return app
