"""Curation of the selected posts: filters, the hash pass, groups, near-duplicate policy.

    selected posts (sorted by (site, id), exact duplicates already handled by make_shards.plan)
      -> metadata filters (:mod:`.filters`)
      -> hash pass: pHash + true size of every remaining picture (``hasher``, cached)
      -> size filters
      -> groups (:mod:`.groups`): families by parent_id, near-duplicates by pHash
      -> dedupe "near": one post per near-duplicate cluster keeps its picture (the largest,
         then the highest score, then the smallest (site, id)); the others stay in the shards
         as rows with status skipped_near_duplicate and duplicate_of = the kept post's key
      -> each post gets its group's anchor (site, id): the split hashes the anchor, not the post

The result is a function of the rows, the pictures' hashes and the settings, so a rebuild
gives the same groups, the same anchors and the same split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from shards.format import make_key

from .filters import Filters, apply, metadata_masks, size_masks
from .groups import group_posts
from .phash import FileHash, from_hex

DEDUPE_POLICIES = ("none", "exact", "near")
NEAR_DISTANCE = 4  # bits of 64; see docs/BENCHMARKS.md, "Near-duplicates"
SKIPPED_NEAR = "skipped_near_duplicate"
Hasher = Callable[[pa.Table], list[FileHash]]


@dataclass(frozen=True)
class Curation:
    """How make-shards cleans and groups the posts; recorded in the manifest."""

    dedupe: str = "exact"  # none | exact (md5) | near (md5, then one per pHash cluster)
    near_distance: int = NEAR_DISTANCE  # pHash bits within which pictures are one cluster
    filters: Filters = field(default_factory=Filters)

    def record(self) -> dict[str, Any]:
        """JSON-ready settings for the build record."""
        out = asdict(self)
        out["filters"]["exclude_tags"] = list(self.filters.exclude_tags)
        out["filters"]["ratings"] = list(self.filters.ratings)
        return out


@dataclass
class Curated:
    """The kept posts with phash, duplicate_of, anchor_site, anchor_id; counts; summary."""

    posts: pa.Table
    counts: dict[str, int]
    grouping: dict[str, Any]


def curate(posts: pa.Table, curation: Curation, hasher: Hasher | None) -> Curated:
    """Filter, hash, group and (with dedupe "near") mark duplicates of ``posts``."""
    counts: dict[str, int] = {}
    posts = posts.filter(pa.array(apply(len(posts), metadata_masks(posts, curation.filters),
                                        counts)))
    found = hasher(posts) if hasher and len(posts) else [FileHash(None, None, None)] * len(posts)
    width = np.array([f.width or 0 for f in found], dtype=np.int64)
    height = np.array([f.height or 0 for f in found], dtype=np.int64)
    keep = apply(len(posts), size_masks(width, height, curation.filters), counts)
    posts, width, height = posts.filter(pa.array(keep)), width[keep], height[keep]
    phash = [f.phash for f, k in zip(found, keep, strict=True) if k]
    hashes, valid = from_hex(phash)
    sites = posts["site"].to_pylist()
    code_of = {name: i for i, name in enumerate(sorted(set(sites)))}
    codes = np.array([code_of[s] for s in sites], dtype=np.int64)
    ids = posts["id"].to_numpy(zero_copy_only=False).astype(np.int64)
    parents = _parents(posts)
    groups = group_posts(codes, ids, parents, hashes, valid, curation.near_distance)
    duplicate_of: list[str | None] = [None] * len(posts)
    if curation.dedupe == "near":
        duplicate_of = _near_duplicates(groups.near, width * height, _scores(posts), sites, ids)
        counts[SKIPPED_NEAR] = sum(d is not None for d in duplicate_of)
    anchor = groups.anchor
    posts = (posts.append_column("phash", pa.array(phash, pa.string()))
             .append_column("duplicate_of", pa.array(duplicate_of, pa.string()))
             .append_column("anchor_site", pa.array([sites[a] for a in anchor], pa.string()))
             .append_column("anchor_id", pa.array(ids[anchor], pa.int64())))
    summary = {**groups.summary, "hashed": int(valid.sum()),
               "unreadable": int((~valid).sum()), **curation.record()}
    return Curated(posts, counts, summary)


def _parents(posts: pa.Table) -> np.ndarray:
    if "parent_id" not in posts.column_names:
        return np.zeros(len(posts), dtype=np.int64)
    values = posts["parent_id"].to_numpy(zero_copy_only=False)
    return np.nan_to_num(values.astype(np.float64), nan=0).astype(np.int64).clip(min=0)


def _scores(posts: pa.Table) -> np.ndarray:
    if "score" not in posts.column_names:
        return np.zeros(len(posts), dtype=np.float64)
    values = posts["score"].to_numpy(zero_copy_only=False).astype(np.float64)
    return np.nan_to_num(values, nan=-np.inf)


def _near_duplicates(near: np.ndarray, area: np.ndarray, score: np.ndarray,
                     sites: list[str], ids: np.ndarray) -> list[str | None]:
    """For each post, the key of its cluster's kept post, or None when it is the kept one."""
    # rows are in (site, id) order: a stable sort by (-area, -score) keeps that tie-break
    order = np.lexsort((-score, -area, near))
    first = np.ones(len(order), dtype=bool)
    first[1:] = near[order][1:] != near[order][:-1]
    kept = np.empty(len(near), dtype=np.int64)
    kept[near[order][first]] = order[first]
    best = kept[near]
    return [None if best[i] == i else make_key(sites[best[i]], int(ids[best[i]]))
            for i in range(len(near))]
