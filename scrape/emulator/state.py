"""The emulator's state: one world, its file store, accounts, faults and the request log.

Every handler reaches it through ``request.config_dict[EMULATOR]``; the app (:mod:`.app`) puts
it there. Nothing here answers a request (:mod:`.responses` does).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from .faults import FaultConfig, FileGate, RequestLog, TokenBucket
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
    """Everything one running emulator knows: the world and its files, the API accounts, the
    faults to inject, the request log and the rate-limit buckets, and which md5s it listed."""

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
        """The md5s of several posts' originals, rendered concurrently."""
        return list(await asyncio.gather(*(self.md5(p) for p in posts)))

    def post_by_md5(self, digest: str) -> Post | None:
        """The post whose listed md5 is ``digest``; None when none was listed yet."""
        pid = self.md5_index.get(digest)
        return None if pid is None else self.world.post(pid)


EMULATOR = web.AppKey("emulator", Emulator)   # app[EMULATOR]: the state, for every handler
