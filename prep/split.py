"""Train/validation split: a pure function of ``(site, id)``.

A post goes to ``val`` when ``blake2b(f"{site}:{id}", digest_size=8)`` read as a big-endian
integer, divided by 2**64, is below ``val_fraction``. It depends on nothing else (not on the
other posts, the input order or the tag index), so rebuilding the shards from a grown scrape
never moves a post between train and val, and a larger ``val_fraction`` only adds to val.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val")


def split_point(site: str, post_id: int) -> float:
    """The post's position in [0, 1): a hash of ``f"{site}:{post_id}"``."""
    digest = hashlib.blake2b(f"{site}:{post_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_of(site: str, post_id: int, val_fraction: float) -> str:
    """``"val"`` for about ``val_fraction`` of all posts, ``"train"`` for the rest."""
    return "val" if split_point(site, post_id) < val_fraction else "train"
