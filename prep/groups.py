"""Groups of posts that must stay on one side of the split: families and near-duplicates.

    parent_id links (same site) -> families (a missing parent still joins its children)
    pHash within max_distance bits (any site) -> near-duplicate clusters
    families + clusters -> groups (connected components); a group's anchor is its smallest
    (site, id), the post whose hash decides the split of every member (:mod:`.split`)

A post alone in its group is its own anchor, so it keeps the split it had before grouping.

Near pairs come from multi-index hashing (Norouzi et al., "Fast search in Hamming space with
multi-index hashing", CVPR 2012): the 64 bits are cut into m chunks; two hashes within d bits
differ by at most d // m bits in some chunk, so each hash looks up, per chunk, the buckets of
its chunk value with every flip of up to d // m bits, and only those candidates are compared.
m is chosen so that a bucket holds about one hash (chunk width near log2 of the count), so the
work grows with the number of hashes, not with its square. Identical hashes are collapsed
first, so a thousand copies of a blank picture cost one lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from math import comb

import numpy as np

MAX_CHUNK_BITS = 22  # lookup table of 2**22 offsets (32 MiB) at most
PAIR_BATCH = 4_000_000  # candidate pairs compared at once


def popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values).astype(np.int64)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
    return table[values.view(np.uint8).reshape(-1, 8)].sum(axis=1)


def _chunks(n: int, max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of each chunk, for the m that makes the fewest expected comparisons."""
    best: tuple[float, int] | None = None
    for m in range(max(1, -(-64 // MAX_CHUNK_BITS)), 17):
        width, radius = 64 // m, max_distance // m
        flips = sum(comb(width, k) for k in range(radius + 1))
        cost = m * flips * (1 + n / 2**width)
        if best is None or cost < best[0]:
            best = (cost, m)
    m = best[1] if best else 4
    widths = [64 // m + (1 if k < 64 % m else 0) for k in range(m)]
    shifts = np.cumsum([0] + widths[:-1])
    return [(int(s), w) for s, w in zip(shifts, widths, strict=True)]


def _flip_masks(width: int, radius: int) -> np.ndarray:
    masks = [0]
    for k in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(width), k)]
    return np.array(masks, dtype=np.int64)


def near_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of ``hashes`` (uint64) within ``max_distance`` bits, no duplicates.

    Copies of one hash value stand for it through their first occurrence: a copy is paired
    with that first occurrence only, and pairs between values use first occurrences, so the
    pairs give the same connected components as all pairs, without k * k pairs for k copies.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    unique, inverse = np.unique(hashes, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    first = np.searchsorted(inverse[order], np.arange(len(unique)))
    same_i, same_j = order[first][inverse[order]], order
    keep = same_i != same_j  # every copy of a hash pairs with its first occurrence
    pairs_i, pairs_j = [same_i[keep]], [same_j[keep]]
    if max_distance > 0 and len(unique) > 1:
        ui, uj = _unique_pairs(unique, max_distance)
        pairs_i.append(order[first][ui])
        pairs_j.append(order[first][uj])
    i, j = np.concatenate(pairs_i), np.concatenate(pairs_j)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return lo.astype(np.int64), hi.astype(np.int64)


def _unique_pairs(unique: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of distinct hashes within max_distance, as index pairs into ``unique``."""
    n = len(unique)
    found: list[np.ndarray] = []
    chunks = _chunks(n, max_distance)
    radius = max_distance // len(chunks)
    for shift, width in chunks:
        keys = ((unique >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]  # queries in key order: the table is read almost in sequence
        counts = np.bincount(keys, minlength=1 << width)
        offsets = np.cumsum(counts) - counts
        for flip in _flip_masks(width, radius):
            query = sorted_keys ^ flip
            hits = counts[query]
            rows = np.flatnonzero(hits)
            for start in range(0, len(rows), PAIR_BATCH // 4):
                part = rows[start:start + PAIR_BATCH // 4]
                found.append(_compare(unique, order, order[part], offsets[query[part]],
                                      hits[part], max_distance))
    codes = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    return codes // n, codes % n


def _compare(unique: np.ndarray, order: np.ndarray, queries: np.ndarray, lo: np.ndarray,
             counts: np.ndarray, max_distance: int) -> np.ndarray:
    """Codes i * n + j (i < j) of the candidates of ``queries`` that are close enough."""
    n = len(unique)
    total = int(counts.sum())
    i = np.repeat(queries, counts)
    step = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    j = order[np.repeat(lo, counts) + step]
    keep = i < j
    i, j = i[keep], j[keep]
    close = popcount(unique[i] ^ unique[j]) <= max_distance
    return i[close] * n + j[close]


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of n nodes and edges (i, j): each node's smallest node index."""
    parent = np.arange(n)
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    while True:
        pi, pj = parent[i], parent[j]
        if len(i) == 0 or (pi == pj).all():
            return parent
        low = np.minimum(pi, pj)
        np.minimum.at(parent, pi, low)
        np.minimum.at(parent, pj, low)
        while True:  # pointer jumping: every node points at its root
            nxt = parent[parent]
            if (nxt == parent).all():
                break
            parent = nxt


@dataclass
class Grouping:
    """Per post: its group's anchor row, its near-duplicate cluster label; and a summary."""

    anchor: np.ndarray  # row of the group's smallest (site, id); its own row when alone
    near: np.ndarray  # smallest row of its near-duplicate cluster (pixels only)
    summary: dict[str, int] = field(default_factory=dict)


def _sizes(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels, minlength=len(labels))


def group_posts(site_codes: np.ndarray, ids: np.ndarray, parents: np.ndarray,
                hashes: np.ndarray, valid: np.ndarray, max_distance: int) -> Grouping:
    """Group posts sorted by (site code, id); ``parents`` is 0 where a post has none.

    ``site_codes`` must follow the sites' sort order so that the smallest row of a group is
    its smallest (site, id). ``valid`` marks the posts whose hash is known.
    """
    n = len(ids)
    keys = site_codes.astype(np.int64) << 40 | ids.astype(np.int64)
    parent_keys = site_codes.astype(np.int64) << 40 | parents.astype(np.int64)
    child = np.flatnonzero(parents > 0)
    at = np.searchsorted(keys, parent_keys[child])
    present = (at < n) & (keys[np.minimum(at, n - 1)] == parent_keys[child])
    missing, virtual = np.unique(parent_keys[child][~present], return_inverse=True)
    target = np.where(present, at, 0)
    target[~present] = n + virtual
    family = components(n + len(missing), child, target)[:n]
    rows = np.flatnonzero(valid)
    near_i, near_j = near_pairs(hashes[rows], max_distance)
    near = components(n, rows[near_i], rows[near_j])
    # every post joins its family's smallest post (a post row: children come after parents)
    both = components(n, np.concatenate([np.arange(n), rows[near_i]]),
                      np.concatenate([family, rows[near_j]]))
    return Grouping(both, near, _summary(family, near, both))


def _summary(family: np.ndarray, near: np.ndarray, both: np.ndarray) -> dict[str, int]:
    fam_sizes, near_sizes, sizes = _sizes_of(family), _sizes(near), _sizes(both)
    return {
        "families": int((fam_sizes >= 2).sum()),
        "posts_in_families": int(fam_sizes[fam_sizes >= 2].sum()),
        "near_duplicate_groups": int((near_sizes >= 2).sum()),
        "posts_in_near_duplicate_groups": int(near_sizes[near_sizes >= 2].sum()),
        "groups_kept_together": int((sizes >= 2).sum()),
        "posts_kept_together": int(sizes[sizes >= 2].sum()),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
    }


def _sizes_of(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels) if len(labels) else np.zeros(0, np.int64)
