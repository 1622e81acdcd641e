"""The shard format: file names, columns, keys, manifest
(docs/DESIGN.md, "Boundary 3: shards (shards/)").

    <root>/manifest.json              FORMAT_NAME + FORMAT_VERSION, task, tag index (file +
                                      sha256), image settings, per split: shards, counts, bytes
    <root>/tags.csv                   the tag index that ``label_ids`` index into
    <root>/<split>/NNNNN.tar          <key>.jpg|.webp and <key>.json per successful sample
    <root>/<split>/NNNNN.parquet      one row per attempted sample (PARQUET_SCHEMA)
    <root>/<split>/NNNNN_stats.json   counts by status; written last: its presence = shard done

Keys are ``[A-Za-z0-9_-]+`` (no dots, so webdataset and Hugging Face ``datasets`` group the
members of a sample the same way) and unique across the whole dataset.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa

FORMAT_NAME = "booru-tagger-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TAGS = "tags.csv"
SPLITS = ("train", "val")
IMAGE_EXTS = ("jpg", "webp")
SUCCESS = "success"
_KEY = re.compile(r"[A-Za-z0-9_-]{1,96}")
_SITE_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")

_STRINGS = pa.list_(pa.string())
PARQUET_SCHEMA = pa.schema([
    ("key", pa.string()), ("site", pa.string()), ("id", pa.int64()), ("md5", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()),
    ("original_width", pa.int32()), ("original_height", pa.int32()),
    ("rating", pa.string()), ("tags", _STRINGS), ("labels", _STRINGS),
    ("label_ids", pa.list_(pa.int32())), ("status", pa.string()), ("error_message", pa.string()),
    ("image_path", pa.string()),
    ("phash", pa.string()), ("duplicate_of", pa.string()),  # prep's near-duplicate grouping
])


@dataclass(frozen=True)
class ShardPaths:
    """The three files of one shard, plus the temporary names they are written under."""

    tar: Path
    parquet: Path
    stats: Path

    @staticmethod
    def of(directory: Path, name: str) -> ShardPaths:
        return ShardPaths(directory / f"{name}.tar", directory / f"{name}.parquet",
                          directory / f"{name}_stats.json")

    def temporary(self, path: Path) -> Path:
        """Where ``path`` is written before the rename (hidden, never matched by ``*.tar``)."""
        return path.with_name(f".{path.name}.tmp")

    def done(self) -> bool:
        """True when the shard is complete: stats (written last), tar and parquet exist."""
        return self.stats.is_file() and self.tar.is_file() and self.parquet.is_file()


def shard_name(index: int) -> str:
    """``00000``, ``00001``, ... (five digits, more when needed)."""
    return f"{index:05d}"


def make_key(site: str, post_id: int) -> str:
    """The sample key of a post: ``<site>_<id>``, the site reduced to ``[A-Za-z0-9-]``."""
    return f"{_SITE_UNSAFE.sub('-', site).strip('-') or 'site'}_{post_id}"


def check_key(key: str) -> None:
    """Raise ValueError unless ``key`` is 1-96 characters of ``[A-Za-z0-9_-]``."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(f"invalid sample key {key!r}: use 1-96 characters of A-Z a-z 0-9 _ -")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_url(location: str) -> bool:
    """True for ``scheme://...`` and ``pipe:`` locations (a Windows drive letter is a path)."""
    scheme = urlparse(location).scheme
    return len(scheme) > 1


def manifest_location(source: str | Path) -> tuple[str, str]:
    """``(manifest, base)`` for a shard root or a manifest file, local or URL.

    ``source`` may be a directory (``shards/``, ``https://host/shards/``) or the manifest itself
    (anything ending in ``.json``); ``base`` is the directory that shard paths are relative to.
    """
    text = str(source)
    if is_url(text):
        if text.endswith(".json"):
            return text, text.rsplit("/", 1)[0]
        base = text.rstrip("/")
        return f"{base}/{MANIFEST}", base
    path = Path(text)
    if path.suffix == ".json":
        return str(path), str(path.parent)
    return str(path / MANIFEST), str(path)


def join_location(base: str, *parts: str) -> str:
    """Join a base directory (local or URL) and relative parts."""
    if is_url(base):
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))
