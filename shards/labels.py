"""A sample's labels as ``prep make-shards`` recorded them: its ``label_ids``, and how often
each occurs in a split.

make-shards decides once which rows of the tag index a sample has (``prep/labels.py``: its
tags in the index in either spelling, its rating against the rating rows, in row order, each
row once) and writes them as ``label_ids`` (0-based rows of the shards' ``tags.csv``) into
``<key>.json`` and the parquet. Every reader takes them from there, never from the tags again:

    label_ids(meta, key)                  # the ids of one sample's <key>.json dict
    read_label_ids("shards/", "val")      # {key: ids} of every sample in the split (parquet)
    positives, samples = label_counts(split_urls, rows=5000)   # positives[i] / samples: the
                                          # share of the split's samples with row i

The parquet files beside the tars are read, the tars never. Shards of format version 1 have
always had ``label_ids``; a sample without them (a tar written by hand or by another tool) is
refused with :class:`LabelsError`, which says so. Torch-free.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


def parquet_of(tar_url: str) -> str:
    """The parquet file (path or URL) beside a shard's tar: ``00000.tar`` -> ``00000.parquet``."""
    if not tar_url.endswith(".tar"):
        raise LabelsError(f"{tar_url}: not a shard's .tar")
    return tar_url[:-len(".tar")] + ".parquet"


def read_label_ids(source: str | Path, split: str = "train",
                   manifest: dict[str, Any] | None = None) -> dict[str, list[int]]:
    """``{key: label_ids}`` of every sample in the tars of ``split`` (the parquet rows whose
    status is success), read from each shard's parquet beside its tar (local or URL).

    Raises ManifestError for an unknown split or an unfinished build, LabelsError when a
    parquet file cannot be read or has no ``label_ids``."""
    manifest = manifest if manifest is not None else read_manifest(source)
    out: dict[str, list[int]] = {}
    for shard in split_shards(manifest, source, split):
        location = parquet_of(shard["url"])
        table = _read(location, ["key", "status", "label_ids"])
        for key, status, ids in zip(*(table.column(c).to_pylist()
                                      for c in ("key", "status", "label_ids")), strict=True):
            if status == SUCCESS:
                if ids is None:
                    raise LabelsError(f"{location}: sample {key} {MISSING}")
                out[key] = ids
    return out


def label_counts(tar_urls: Iterable[str], rows: int) -> tuple[np.ndarray, int]:
    """(samples with each label id, as int64 of length `rows`; successful samples) over the
    shards of these tars. Raises LabelsError when a parquet file cannot be read, a successful
    sample has no ``label_ids``, or an id is not a row of a `rows`-row tag index."""
    positives = np.zeros(rows, np.int64)
    samples = 0
    for url in tar_urls:
        location = parquet_of(url)
        table = _read(location, ["status", "label_ids"])
        table = table.filter(pc.equal(table["status"], SUCCESS))
        ids = table["label_ids"].combine_chunks()
        if ids.null_count:
            raise LabelsError(f"{location}: {ids.null_count} successful samples without "
                              "label_ids (shards not written by prep make-shards?)")
        values = pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        if len(values) and (values.min() < 0 or values.max() >= rows):
            raise LabelsError(f"{location}: label id {int(values.max())} is not a row of the "
                              f"{rows}-row tag index")
        sample = pc.list_parent_indices(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        once = np.unique(sample * rows + values) % rows       # a label counts once per sample
        positives += np.bincount(once, minlength=rows)
        samples += len(table)
    return positives, samples


def _read(location: str, columns: list[str]) -> pa.Table:
    try:
        with open_stream(location) as stream:
            data = stream.read()
        return pq.read_table(io.BytesIO(data), columns=columns)
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise LabelsError(f"cannot read the label_ids in {location}: {exc}") from None
