"""The scrape tests' search and what each site lists for it."""

from __future__ import annotations

from scrape.emulator.gelbooru import DIALECT

QUERY = "fubowa_rino"          # a copyright of the session world: ~50 posts, with characters


def listed_by(site: str, posts: list) -> list:
    """The posts a site lists for a search, from the world's posts matching it."""
    if site == "danbooru":
        return posts                                    # deleted posts are listed
    if site == "safebooru":
        return [p for p in posts if not p.is_deleted and p.rating == "g"]
    return [p for p in posts if not p.is_deleted]


def dialect(emulator, site: str):
    for resource in emulator.app.router.resources():
        info = resource.get_info()
        if info.get("prefix") == f"/{site}":
            return info["app"][DIALECT]
    raise LookupError(site)
