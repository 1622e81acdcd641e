"""An offline booru: Danbooru, Gelbooru, Safebooru, yande.re and Konachan APIs on 127.0.0.1.

    world.py    posts generated on demand from a seed (vocab.py: tags; render.py: images)
    files.py    rendered files with an LRU cache; the listed md5 is the md5 of the bytes served
    query.py    tag search syntax, compiled to vectorised filters over blocks of posts
    danbooru.py, gelbooru.py (+ safebooru; gelbooru_posts.py: post objects, dialect table),
    moebooru.py (yande.re, konachan): the API dialects
    faults.py   fault injection, rate limits, the user-agent filter and the request log
    server.py   the aiohttp app; runner.py starts it (foreground or on a thread)

It never imports the scraper: the two are independent, so a shared misunderstanding of a site
cannot make both pass.
"""

from .faults import FaultConfig
from .runner import EmulatorThread, build

__all__ = ["EmulatorThread", "FaultConfig", "build"]
