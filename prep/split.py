"""Train/validation split: a hash of the (site, id) of the post's group anchor.

A post goes to ``val`` when ``blake2b(f"{site}:{id}", digest_size=8)`` read as a big-endian
integer, divided by 2**64, is below ``val_fraction``, where (site, id) is the *anchor* of the
post's group (:mod:`.curation`): the smallest (site, id) of its family by ``parent_id`` and of
its near-duplicates by pHash; a post in no group is its own anchor. So a group never straddles
train and val, the same input always gives the same split, and a larger ``val_fraction`` only
adds to val.

It does not depend on the input order or the tag index, but it does depend on the other posts:
a rebuild from a grown scrape can move a post between train and val when its anchor changes
(a newly scraped parent or near-duplicate with a smaller id joins its group, or two groups
merge). Make-shards keeps no list of an earlier split to hold it to. A model trained on the old
shards may therefore have trained on a post that is now in val: to compare it fairly, leave
out of the new val the keys that were in the old train split (each shard's parquet lists its
samples' keys), or train from scratch on the new shards.
"""

from __future__ import annotations

import hashlib

SPLIT_RULE = ("val when blake2b(f'{site}:{id}', digest_size=8) / 2**64 < val_fraction, for the "
              "smallest (site, id) of the post's group (family by parent_id, near-duplicates "
              "by pHash; see grouping): a group never straddles train and val")
"""The rule in words, as the manifest records it under ``split``."""


def split_point(site: str, post_id: int) -> float:
    """The position in [0, 1) of an anchor ``(site, post_id)``: a hash of its text."""
    digest = hashlib.blake2b(f"{site}:{post_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
