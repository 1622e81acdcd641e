"""Site adapters, one module per API family; sibling sites on one engine are table rows.

    danbooru.py   Danbooru v2                       danbooru
    gelbooru.py   Gelbooru 0.2 dapi                 gelbooru, safebooru
    moebooru.py   Moebooru                          yandere, konachan
"""

from __future__ import annotations

from .base import Site, TagCache
from .danbooru import Danbooru
from .gelbooru import Gelbooru, Safebooru
from .moebooru import Konachan, Yandere

SITES: dict[str, type[Site]] = {cls.name: cls for cls in
                                (Danbooru, Gelbooru, Safebooru, Yandere, Konachan)}

__all__ = ["SITES", "Site", "TagCache"]
