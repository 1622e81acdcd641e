"""An offline booru: Danbooru, Gelbooru, Safebooru, yande.re and Konachan APIs on 127.0.0.1.

    world.py    posts generated on demand from a seed (vocab.py: tags; render.py: images)
    files.py    rendered files with an LRU cache; the listed md5 is the md5 of the bytes served
    query.py    tag search syntax, compiled to vectorised filters over blocks of posts
    danbooru.py, gelbooru.py (+ safebooru; gelbooru_posts.py: post objects, dialect table),
    moebooru.py (yande.re, konachan): the API dialects
    faults.py   fault settings, rate limits, the user-agent filter and the request log;
                middleware.py applies them to every request
    state.py    the emulator's state (world, files, accounts, faults, log) and its app key
    responses.py  files (ETag, Range, file faults), JSON bodies, Ruby's number parsing
    sites.py    the one registry of sites: prefix -> sub-application (and a one-post path)
    app.py      the aiohttp app (control endpoints, one sub-app per site); runner.py starts it
                (foreground or on a thread)

It never imports the scraper: the two are independent, so a shared misunderstanding of a site
cannot make both pass.
"""

from .faults import FaultConfig
from .runner import EmulatorThread, build

__all__ = ["EmulatorThread", "FaultConfig", "build"]
