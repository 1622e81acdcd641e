"""A sample's labels as ``prep make-shards`` recorded them: its ``label_ids``.

make-shards decides once which rows of the tag index a sample has (``prep/labels.py``: its
tags in the index in either spelling, its rating against the rating rows, in row order, each
row once) and writes them as ``label_ids`` (0-based rows of the shards' ``tags.csv``) into
``<key>.json`` and the parquet. Every reader takes them from there, never from the tags again:

    label_ids(meta, key)              # the ids of one sample's <key>.json dict
    read_label_ids("shards/", "val")  # {key: ids} of every sample in the split, from the parquet

Shards of format version 1 have always had ``label_ids``; a sample without them (a tar written
by hand or by another tool) is refused with :class:`LabelsError`, which says so.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .errors import LabelsError
from .format import SUCCESS
from .manifest import read_manifest, split_shards
from .streams import open_stream

MISSING = ("has no 'label_ids' (the tags.csv rows make-shards gives it): these shards were not "
           "written by `prep make-shards`; rebuild them with it")


def label_ids(meta: Mapping[str, Any], key: str | None = None) -> list[int]:
    """The ``label_ids`` of a sample's ``<key>.json`` dict. Raises LabelsError when they are
    missing or are not a list of non-negative integers."""
    name = key if key is not None else meta.get("key")
    ids = meta.get("label_ids")
    if ids is None:
        raise LabelsError(f"sample {name} {MISSING}")
    if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise LabelsError(f"sample {name}: 'label_ids' must be a list of row numbers, "
                          f"got {ids!r}")
    return ids


def read_label_ids(source: str | Path, split: str = "train",
                   manifest: dict[str, Any] | None = None) -> dict[str, list[int]]:
    """``{key: label_ids}`` of every sample in the tars of ``split`` (the parquet rows whose
    status is success), read from each shard's parquet beside its tar (local or URL).

    Raises ManifestError for an unknown split or an unfinished build, LabelsError when a
    parquet file cannot be read or has no ``label_ids`` column."""
    manifest = manifest if manifest is not None else read_manifest(source)
    out: dict[str, list[int]] = {}
    for shard in split_shards(manifest, source, split):
        url = shard["url"].removesuffix(".tar") + ".parquet"
        try:
            with open_stream(url) as stream:
                table = pq.read_table(io.BytesIO(stream.read()),
                                      columns=["key", "status", "label_ids"])
        except (OSError, ValueError, KeyError) as exc:
            raise LabelsError(f"{url}: cannot read its label_ids: {exc}") from None
        for key, status, ids in zip(*(table.column(c).to_pylist()
                                      for c in ("key", "status", "label_ids")), strict=True):
            if status == SUCCESS:
                if ids is None:
                    raise LabelsError(f"{url}: sample {key} {MISSING}")
                out[key] = ids
    return out
