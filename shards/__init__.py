"""booru-tagger shards: WebDataset tar + parquet pairs with a manifest
(docs/DESIGN.md, "Boundary 3: shards (shards/)").

    format.py   file names, parquet columns, sample keys, manifest location
    manifest.py manifest.json: build the body, read and check, a split's shards (Split),
                complete from stats, write
    tags.py     tags.csv: the one strict reader and the writer
    streams.py  open paths, http(s) URLs (retried) and pipe: URLs; tar samples; brace patterns
    atomic.py   write-then-rename with fsync (used by prep and train too)
    writer.py   ShardWriter: one shard, tar and parquet renamed into place, stats written last
    reader.py   webdataset-style stages: list_shards -> tar_samples -> decode; read_shards
    labels.py   label_ids as make-shards recorded them (<key>.json, parquet); label_counts per split
    storage.py  object storage through fsspec (s3://, gs://, ...): open with retries, upload

``prep make-shards`` writes shards through :class:`ShardWriter`; ``train`` reads them through
the stages, plain ``webdataset.WebDataset`` or Hugging Face ``datasets``. The reader names are
imported on first use: webdataset imports torch, which writing shards does not need.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ManifestError, ShardsError, TagsError
from .format import FORMAT_NAME, FORMAT_VERSION, PARQUET_SCHEMA, make_key
from .manifest import read_manifest, write_manifest
from .tags import read_tags, write_tags
from .writer import ShardWriter

_READER = ("decode", "list_shards", "log_and_continue", "read_shards", "shard_urls",
           "tar_samples")

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "PARQUET_SCHEMA", "ManifestError", "ShardWriter",
           "ShardsError", "TagsError", "make_key", "read_manifest", "read_tags",
           "write_manifest", "write_tags", *_READER]


def __getattr__(name: str) -> Any:
    if name in _READER:
        return getattr(importlib.import_module(".reader", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
