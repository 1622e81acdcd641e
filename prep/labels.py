"""The tag index as a label space: read ``tags.csv`` and map a post's tags to labels.

Row *i* of ``tags.csv`` is label (model output) *i* (docs/DESIGN.md, "Boundary 2: tag index
(tags.csv)"). A post's labels are its tags that are in the index, plus, when the index has the
rating rows of category 9 (``make-tag-index --include-ratings``), the row named like the post's
rating. Labels come in row order, as names and as row indices. A post is *untagged* when none of
its tags is in the index; its rating alone does not count.

A tag matches a row in either spelling caption tools write (:func:`tag_key`): with spaces or
underscores (``orange background`` is ``orange_background``) and with the escaped parentheses
of prompt-style captions (``diamond \\(shape\\)`` is ``diamond_(shape)``); a row named exactly
like the tag comes first.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shards.errors import TagsError
from shards.tags import decode_tags

from .errors import InputError
from .tag_index import RATING_CATEGORY

_ESCAPED = re.compile(r"\\([()\\])")      # \( \) \\ as `tag --escape-parentheses` writes them


def tag_key(tag: str) -> str:
    """The spelling-free form of a tag: caption escapes undone, spaces as underscores."""
    if "\\" in tag:
        tag = _ESCAPED.sub(r"\1", tag)
    return tag.replace(" ", "_")


def _unescape_array(tags: pa.Array) -> pa.Array:
    """:func:`tag_key` of every string of an arrow array."""
    return pc.replace_substring(pc.replace_substring_regex(tags, r"\\([()\\])", r"\1"), " ", "_")


@dataclass(frozen=True)
class LabelIndex:
    """The rows of a tag index and lookups by name."""

    names: tuple[str, ...]
    categories: tuple[int, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        tags = {n: i for i, (n, c) in enumerate(zip(self.names, self.categories, strict=True))
                if c != RATING_CATEGORY}
        ratings = {n: i for i, (n, c) in enumerate(zip(self.names, self.categories, strict=True))
                   if c == RATING_CATEGORY}
        keys: dict[str, int] = {}
        for name, i in tags.items():
            keys.setdefault(tag_key(name), i)
        object.__setattr__(self, "_tags", tags)
        object.__setattr__(self, "_keys", keys)
        object.__setattr__(self, "_ratings", ratings)

    @property
    def tag_names(self) -> list[str]:
        """Names of the rows that are tags (not rating rows)."""
        return list(self._tags)  # type: ignore[attr-defined]

    def row_of(self, tag: str) -> int | None:
        """The tag row a tag matches, in its own spelling or another (:func:`tag_key`)."""
        row = self._tags.get(tag)  # type: ignore[attr-defined]
        if row is None:
            row = self._keys.get(tag_key(tag))  # type: ignore[attr-defined]
        return row

    def labels(self, tags: Iterable[str], rating: str | None) -> tuple[list[str], list[int]]:
        """The labels of a post as ``(names, row indices)``, in row order."""
        ids = {row for row in map(self.row_of, tags) if row is not None}
        rating_id = self._ratings.get(rating) if rating else None  # type: ignore[attr-defined]
        if rating_id is not None:
            ids.add(rating_id)
        ordered = sorted(ids)
        return [self.names[i] for i in ordered], ordered

    def count_tagged(self, tag_lists: pa.Array) -> pa.Array:
        """Per post (``list<string>`` array), how many of its tags are in the index."""
        flat = _unescape_array(pc.list_flatten(tag_lists))
        keys = pa.array(list(self._keys), pa.string())  # type: ignore[attr-defined]
        hits = pc.is_in(flat, value_set=keys)
        parents = pc.list_parent_indices(tag_lists)
        found = parents.filter(hits).to_numpy(zero_copy_only=False)
        return pa.array(np.bincount(found, minlength=len(tag_lists)).astype(np.int32))


    def unknown(self, tag_counts: Mapping[str, int]) -> Counter[str]:
        """The tags of ``tag_counts`` (tag -> images) that match no tag row, with their counts."""
        return Counter({t: n for t, n in tag_counts.items() if self.row_of(t) is None})


def index_of(rows: Sequence[dict]) -> LabelIndex:
    """The label space of ``tags.csv`` rows (as :func:`shards.tags.read_tags` gives them)."""
    return LabelIndex(tuple(r["name"] for r in rows), tuple(r["category"] for r in rows),
                      tuple(r["count"] for r in rows))


def read_tags_csv(path: Path) -> tuple[LabelIndex, bytes]:
    """Read a ``tags.csv``; returns the index and the file's bytes (copied next to the shards).

    Raises InputError when the file is missing or malformed.
    """
    try:
        data = path.read_bytes()
        return index_of(decode_tags(data, str(path))), data
    except OSError as exc:
        raise InputError(f"cannot read the tag index {path}: {exc}") from exc
    except TagsError as exc:
        raise InputError(str(exc)) from None
