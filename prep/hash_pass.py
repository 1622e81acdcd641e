"""The first pass of ``make-shards``: a perceptual hash and the true size of every candidate.

    candidate posts -> stat each file -> cached? (same path, size, mtime) -> reuse
                                      -> else hash_file (reduced decode, :mod:`.phash`) in the
                                         ImagePool workers, appended to the cache in parts

The split must be known before a shard is written, and the split depends on the near-duplicate
groups, so the hashes come first. The pass decodes each picture at a reduced size (a JPEG at a
DCT scale of 1/8) and is cached under ``out/.phash-cache/`` in immutable Arrow (feather) parts of
PART_ROWS rows, each written to a temporary name and renamed: after a kill -9 the rerun reuses
every finished part and hashes only the rest; a finished build's rerun hashes nothing.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
from tqdm import tqdm

from .image_pool import ImagePool, Item
from .imaging import ImageSettings
from .phash import FileHash, hash_file

log = logging.getLogger(__name__)

CACHE_DIR = ".phash-cache"
PART_ROWS = 4096
BATCH = 32
CACHE_SCHEMA = pa.schema([
    ("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
    ("phash", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("error", pa.string()),
])
_Stat = tuple[int, int]


def hash_item(item: Item, settings: ImageSettings) -> tuple[str, str | None, FileHash]:
    """ImagePool work function: the FileHash of one item (status/message kept for the pool)."""
    found = hash_file(item[0], settings.max_pixels)
    return ("success" if found.phash else "failed", found.error, found)


@dataclass
class HashCache:
    """The cached hashes in ``directory``: path -> ((size, mtime_ns), FileHash)."""

    directory: Path

    def load(self) -> dict[str, tuple[_Stat, FileHash]]:
        known: dict[str, tuple[_Stat, FileHash]] = {}
        if not self.directory.is_dir():
            return known
        for part in sorted(self.directory.glob("part-*.feather")):
            try:
                rows = feather.read_table(part).cast(CACHE_SCHEMA).to_pylist()
            except (pa.ArrowException, OSError) as exc:
                log.warning("ignoring unreadable hash cache part %s (%s)", part, exc)
                continue
            for r in rows:
                known[r["path"]] = ((r["size"], r["mtime_ns"]),
                                    FileHash(r["phash"], r["width"], r["height"], r["error"]))
        return known

    def write(self, rows: list[dict]) -> None:
        """Add one immutable part (temporary name, then rename)."""
        if not rows:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"part-{uuid.uuid4().hex}.feather"
        tmp = self.directory / f".{name}.tmp"
        feather.write_feather(pa.Table.from_pylist(rows, schema=CACHE_SCHEMA), tmp)
        os.replace(tmp, self.directory / name)


def _stat(path: str | None) -> _Stat | None:
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def hash_files(paths: list[str | None], cache_dir: Path, settings: ImageSettings,
               workers: int = 1, progress: bool = False) -> list[FileHash]:
    """The FileHash of every path (None: an unsafe path), in order, using and filling the cache.

    Unreadable files get ``phash=None`` and an ``error``; nothing here raises for a bad file.
    """
    cache = HashCache(cache_dir)
    known = cache.load()
    stats = [_stat(p) for p in paths]
    out: list[FileHash | None] = [None] * len(paths)
    todo: list[int] = []
    for i, (path, stat) in enumerate(zip(paths, stats, strict=True)):
        if stat is None:
            out[i] = FileHash(None, None, None, "unsafe image_path" if path is None
                              else "cannot read the file")
        elif path in known and known[path][0] == stat:
            out[i] = known[path][1]
        else:
            todo.append(i)
    log.info("hash pass: %d of %d pictures cached, %d to hash", len(paths) - len(todo),
             len(paths), len(todo))
    rows: list[dict] = []
    items = ((paths[i], paths[i] or "") for i in todo)
    with ImagePool(settings, workers, batch=BATCH, process=hash_item) as pool, \
            tqdm(total=len(todo), unit="img", desc="phash", disable=not progress) as bar:
        for i, (_, message, result) in zip(todo, pool.map(items), strict=True):
            found = result or FileHash(None, None, None, message)  # a worker died on it
            out[i] = found
            size, mtime = stats[i]  # type: ignore[misc]
            rows.append({"path": paths[i], "size": size, "mtime_ns": mtime,
                         "phash": found.phash, "width": found.width, "height": found.height,
                         "error": found.error})
            if len(rows) >= PART_ROWS:
                cache.write(rows)
                rows = []
            bar.update()
    cache.write(rows)
    return [f if f is not None else FileHash(None, None, None, "not hashed") for f in out]
