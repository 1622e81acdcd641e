"""The emulator's one registry of sites: the prefix each is mounted at, the function that builds
its sub-application, and the path of a one-post listing (for a quick look, as the demo takes).

The scraper keeps its own registry of adapters (``scrape.sites.SITES``): the emulator never
imports the scraper, and a test checks that the two name the same sites.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from . import danbooru, gelbooru, moebooru
from .state import Emulator


@dataclass(frozen=True)
class SiteApp:
    """One emulated site: how to build its sub-application, and a one-post listing path."""

    make_app: Callable[[Emulator], web.Application]
    one_post: str


_GELBOORU_ONE_POST = "/index.php?page=dapi&s=post&q=index&json=1&limit=1"

SITES: dict[str, SiteApp] = {
    "danbooru": SiteApp(danbooru.make_app, "/posts.json?limit=1"),
    "gelbooru": SiteApp(gelbooru.make_gelbooru, _GELBOORU_ONE_POST),
    "safebooru": SiteApp(gelbooru.make_safebooru, _GELBOORU_ONE_POST),
    "yandere": SiteApp(moebooru.make_yandere, "/post.json?limit=1"),
    "konachan": SiteApp(moebooru.make_konachan, "/post.json?limit=1"),
}
