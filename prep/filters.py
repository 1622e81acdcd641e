"""The curators' filters of ``make-shards``: each drops posts and counts them under its name.

    metadata (before hashing): ratings -> exclude_tags -> min_score
    pixels (after the hash pass, on the true oriented size): min_side -> max_aspect

A post dropped by one filter is counted there only (the first that drops it, in this order).
A post whose score is unknown (a folder input) fails ``min_score``; a picture whose size is
unknown (it could not be read) passes the size filters and fails later with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

RATINGS = ("general", "sensitive", "questionable", "explicit")


@dataclass(frozen=True)
class Filters:
    """What to leave out; the defaults leave out nothing."""

    min_side: int = 0  # shorter side of the original picture, pixels
    max_aspect: float = 0.0  # longer side / shorter side (0: any)
    exclude_tags: tuple[str, ...] = ()  # posts with any of these tags
    ratings: tuple[str, ...] = ()  # keep only these ratings (empty: all)
    min_score: int | None = None  # keep posts with score >= this


def metadata_masks(posts: pa.Table, filters: Filters) -> list[tuple[str, np.ndarray]]:
    """(count name, keep mask) of each metadata filter that is set, in order."""
    masks = []
    if filters.ratings:
        keep = pc.fill_null(pc.is_in(posts["rating"], pa.array(list(filters.ratings))), False)
        masks.append(("filtered_rating", np.asarray(keep)))
    if filters.exclude_tags:
        exclude = set(filters.exclude_tags)
        keep = [not exclude.intersection(tags or ()) for tags in posts["tags"].to_pylist()]
        masks.append(("filtered_tags", np.array(keep, dtype=bool)))
    if filters.min_score is not None:
        score = posts["score"] if "score" in posts.column_names else pa.nulls(len(posts))
        keep = pc.fill_null(pc.greater_equal(score, filters.min_score), False)
        masks.append(("filtered_score", np.asarray(keep)))
    return masks


def size_masks(width: np.ndarray, height: np.ndarray,
               filters: Filters) -> list[tuple[str, np.ndarray]]:
    """(count name, keep mask) of each size filter that is set; width/height 0 = unknown."""
    known = (width > 0) & (height > 0)
    short = np.minimum(width, height)
    masks = []
    if filters.min_side:
        masks.append(("filtered_min_side", ~known | (short >= filters.min_side)))
    if filters.max_aspect:
        ratio = np.maximum(width, height) / np.maximum(short, 1)
        masks.append(("filtered_aspect", ~known | (ratio <= filters.max_aspect)))
    return masks


def apply(n: int, masks: list[tuple[str, np.ndarray]], counts: dict[str, int]) -> np.ndarray:
    """The n rows every mask keeps; counts each filter's drops (the first to drop wins)."""
    keep = np.ones(n, dtype=bool)
    for name, mask in masks:
        counts[name] = int((keep & ~mask).sum())
        keep &= mask
    return keep


def parse_ratings(text: str) -> tuple[str, ...]:
    """``general,sensitive`` -> a tuple; raises ValueError for an unknown rating."""
    names = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = [r for r in names if r not in RATINGS]
    if unknown or not names:
        raise ValueError(f"ratings must be a comma list of {', '.join(RATINGS)}")
    return names
