"""How often each label occurs in a split, from the shards' parquet files (the tars unread).

    positives, samples = label_counts(split_urls, rows=5000)
    positives[i] / samples       # the share of the split's samples with tags.csv row i

Each shard's ``NNNNN.parquet`` beside its ``NNNNN.tar`` holds one row per attempted sample;
the successes (the samples in the tar) are counted, each label of a sample once, by its
``label_ids`` (row numbers of the shards' ``tags.csv``). Torch-free.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import ShardsError
from .format import SUCCESS
from .streams import open_stream

log = logging.getLogger(__name__)


def parquet_of(tar_url: str) -> str:
    """The parquet file (path or URL) beside a shard's tar: ``00000.tar`` -> ``00000.parquet``."""
    if not tar_url.endswith(".tar"):
        raise ShardsError(f"{tar_url}: not a shard's .tar")
    return tar_url[:-len(".tar")] + ".parquet"


def label_counts(tar_urls: Iterable[str], rows: int) -> tuple[np.ndarray, int]:
    """(samples with each label id, as int64 of length `rows`; successful samples) over the
    shards of these tars. Raises ShardsError when a parquet file cannot be read, a successful
    sample has no ``label_ids`` (shards not written by ``prep make-shards``), or an id is not
    a row of a `rows`-row tag index."""
    positives = np.zeros(rows, np.int64)
    samples = 0
    for url in tar_urls:
        location = parquet_of(url)
        table = _read(location)
        table = table.filter(pc.equal(table["status"], SUCCESS))
        ids = table["label_ids"].combine_chunks()
        if ids.null_count:
            raise ShardsError(f"{location}: {ids.null_count} successful samples without "
                              "label_ids (shards not written by prep make-shards?)")
        values = pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        if len(values) and (values.min() < 0 or values.max() >= rows):
            raise ShardsError(f"{location}: label id {int(values.max())} is not a row of the "
                              f"{rows}-row tag index")
        sample = pc.list_parent_indices(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        once = np.unique(sample * rows + values) % rows       # a label counts once per sample
        positives += np.bincount(once, minlength=rows)
        samples += len(table)
    return positives, samples


def _read(location: str) -> pa.Table:
    try:
        with open_stream(location) as stream:
            data = stream.read()
        return pq.read_table(io.BytesIO(data), columns=["status", "label_ids"])
    except (OSError, pa.ArrowException) as exc:
        raise ShardsError(f"cannot read the labels in {location}: {exc}") from None
