"""The first pass of ``make-shards``: every candidate picture prepared once, hashed, cached.

    candidate posts -> stat each file -> cached? (same path, size, mtime) -> reuse
                                      -> else cache_item in the ImagePool workers: the one
                                         image preparation (decode, resize, pad), the pHash of
                                         the resized picture (:func:`..phash.phash_prepared`)
                                         and the encoded shard image
    -> groups and splits (:mod:`..curation`) -> shards assembled from the cached images

The split must be known before a shard is written and depends on the near-duplicate groups,
so every picture is seen before the first shard. Doing the shard's work in that pass (and
keeping its result in the *first-pass cache*) means no picture is decoded twice: the hash of
the already resized picture costs about 1 % of the per-image time (docs/BENCHMARKS.md), where
a separate hashing decode cost 64 %. The cache lives in ``out/.stage/<settings digest>/``, in
immutable Arrow (feather) parts of at most ``part_rows`` rows: ``part-X.feather`` (path, size,
mtime, status, hash, sizes) and ``part-X.images.feather`` (the encoded bytes, uncompressed so
they are read memory-mapped), each written to a temporary name and renamed, images first.
After a kill -9 the rerun reuses every finished part; a finished build drops the images and
keeps the rest, so its rerun neither decodes nor hashes. A picture whose images are gone is
prepared again when a shard needs it. Without ``keep_images`` (the Ray engine, a build split
over nodes, whose shards are made elsewhere) the pass prepares and hashes but neither encodes
nor keeps. (The first-pass cache is not the upload folder, ``--staging``, of :mod:`.upload`.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import tee
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
from tqdm import tqdm

from cli_kit.disk_full import writing

from ..image_pool import ImagePool, Item, Result, process_item
from ..imaging import EncodedImage, ImageRejected, ImageSettings, encode, prepare_picture
from ..pause import pause_point
from ..phash import FileHash, phash_prepared
from ..sources import read_source, stat_sources

log = logging.getLogger(__name__)

FIRST_PASS_DIR = ".stage"  # the cache folder in out/ (the name on disk, kept for resumes)
PART_ROWS = 4096
BATCH = 8
OPEN_PARTS = 32  # image parts kept memory-mapped at once
STAGE_SCHEMA = pa.schema([
    ("path", pa.string()), ("size", pa.int64()), ("mtime_ns", pa.int64()),
    ("status", pa.string()), ("message", pa.string()), ("phash", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()),  # the (oriented) original size
    ("out_width", pa.int32()), ("out_height", pa.int32()),
])
IMAGES_SCHEMA = pa.schema([("data", pa.binary())])
_Stat = tuple[int, int]


@dataclass(frozen=True)
class CachedPicture:
    """One picture after the first pass: its status, message, FileHash and shard image."""

    status: str
    message: str | None
    found: FileHash
    encoded: EncodedImage | None


_Work = tuple[str, str | None, CachedPicture | None]


def cache_item(item: Item, settings: ImageSettings) -> _Work:
    """ImagePool work function: prepare, hash and encode one item, as ``process_item`` would
    (same statuses and messages); failures become a status, never an exception. A file that
    cannot be read now gets no CachedPicture (not kept: it may be readable at the next run)."""
    return _first_pass(item, settings, keep=True)


def hash_item(item: Item, settings: ImageSettings) -> _Work:
    """:func:`cache_item` without the encoding (the shards are made elsewhere)."""
    return _first_pass(item, settings, keep=False)


def _first_pass(item: Item, settings: ImageSettings, keep: bool) -> _Work:
    try:
        data = read_source(item[0]) if item[0] is not None else None
    except OSError:
        data = None
    if data is None:  # process_item words the failure (bad path, missing, unreadable)
        status, message, _ = process_item(item, settings)
        return status, message, None
    try:
        prepared = prepare_picture(data, settings)
        found = FileHash(phash_prepared(prepared.picture, prepared.original, settings),
                         *prepared.original)
    except ImageRejected as rejected:
        return _failed(rejected.status, rejected.message)
    except Exception as exc:  # noqa: BLE001 - as process_item: recorded, the run goes on
        return _failed("failed_error", f"{type(exc).__name__}: {exc}"[:300])
    encoded = None
    if keep:
        try:
            encoded = EncodedImage(encode(prepared.picture, settings), *prepared.picture.size,
                                   *prepared.original)
        except (OSError, ValueError) as exc:
            text = str(exc).strip() or type(exc).__name__
            return _failed("failed_corrupt", f"cannot encode: {type(exc).__name__}: {text}"[:300])
    return "success", None, CachedPicture("success", None, found, encoded)


def _failed(status: str, message: str) -> tuple[str, str, CachedPicture]:
    return status, message, CachedPicture(status, message, FileHash(None, None, None, message),
                                          None)


def settings_digest(settings: ImageSettings) -> str:
    """16 hex characters naming the cache folder of these image settings."""
    text = json.dumps(asdict(settings), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FirstPassCache:
    """The first-pass cache of one ``out/`` and image settings (see the module docstring)."""

    def __init__(self, root: Path, settings: ImageSettings, keep_images: bool = True,
                 part_rows: int = PART_ROWS):
        self.root = root
        self.directory = root / settings_digest(settings)
        self.settings = settings
        self.keep_images = keep_images
        self.part_rows = max(1, part_rows)
        self._where: dict[str, tuple[str, int, CachedPicture]] = {}  # path -> (part, row, cached)
        self._open: OrderedDict[str, pa.Table] = OrderedDict()

    def run(self, paths: list[str | None], workers: int = 1,
            progress: bool = False) -> list[FileHash]:
        """The FileHash of every path (None: an unsafe path), in order, caching what is new.

        Unreadable files get ``phash=None`` and an ``error``; nothing here raises for a bad file.
        """
        known = self._load()
        stats = stat_sources(paths)
        out: list[FileHash | None] = [None] * len(paths)
        todo: list[int] = []
        for i, (path, stat) in enumerate(zip(paths, stats, strict=True)):
            if stat is None:
                out[i] = FileHash(None, None, None, "unsafe image_path" if path is None
                                  else "cannot read the file")
            elif path in known and known[path][0] == stat:
                part, row, cached = known[path][1]
                out[i] = cached.found
                self._where[path] = (part, row, cached)
            else:
                todo.append(i)
        log.info("first pass: %d of %d pictures cached before, %d to prepare",
                 len(paths) - len(todo), len(paths), len(todo))
        work = cache_item if self.keep_images else hash_item
        rows: list[tuple[str, _Stat, CachedPicture]] = []
        items = ((paths[i], paths[i] or "") for i in todo)
        with ImagePool(self.settings, workers, batch=BATCH, process=work) as pool, \
                tqdm(total=len(todo), unit="img", desc="first pass",
                     disable=not progress) as bar:
            for i, (_, message, cached) in zip(todo, pool.map(items), strict=True):
                if cached is None:  # unreadable now, or a worker died: the shard pass retries
                    out[i] = FileHash(None, None, None, message)
                    bar.update()
                    continue
                out[i] = cached.found
                rows.append((paths[i], stats[i], cached))  # type: ignore[arg-type]
                if len(rows) >= self.part_rows:
                    self._write(rows)
                    rows = []
                bar.update()
        self._write(rows)
        return [f if f is not None else FileHash(None, None, None, "not hashed") for f in out]

    def forget_others(self) -> None:
        """Delete the caches of other image settings (once this build goes ahead)."""
        if self.root.is_dir():
            for other in self.root.iterdir():
                if other != self.directory:
                    shutil.rmtree(other, ignore_errors=True)

    def _load(self) -> dict[str, tuple[_Stat, tuple[str, int, CachedPicture]]]:
        """What earlier runs cached with these settings."""
        known: dict[str, tuple[_Stat, tuple[str, int, CachedPicture]]] = {}
        if not self.directory.is_dir():
            return known
        for stale in self.directory.glob(".part-*.tmp"):  # a run killed mid-write (out/ is locked)
            stale.unlink(missing_ok=True)
        for part in sorted(self.directory.glob("part-*.feather")):
            if part.name.endswith(".images.feather"):
                continue
            try:
                rows = feather.read_table(part).cast(STAGE_SCHEMA).to_pylist()
            except (pa.ArrowException, OSError) as exc:
                log.warning("ignoring unreadable first-pass cache part %s (%s)", part, exc)
                continue
            for k, r in enumerate(rows):
                found = FileHash(r["phash"], r["width"], r["height"], r["message"])
                encoded = None
                if r["status"] == "success" and r["out_width"] is not None:
                    encoded = EncodedImage(b"", r["out_width"], r["out_height"], r["width"],
                                           r["height"])
                known[r["path"]] = ((r["size"], r["mtime_ns"]),
                                    (part.name, k, CachedPicture(r["status"], r["message"], found,
                                                          encoded)))
        return known

    def _write(self, rows: list[tuple[str, _Stat, CachedPicture]]) -> None:
        """Add one immutable part: the images, then the rows (temporary names, then renames)."""
        if not rows:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"part-{uuid.uuid4().hex}"
        if self.keep_images:
            data = [s.encoded.data if s.encoded else None for _, _, s in rows]
            self._put(pa.Table.from_pydict({"data": data}, schema=IMAGES_SCHEMA),
                      f"{name}.images.feather")
        table = pa.Table.from_pylist([{
            "path": path, "size": stat[0], "mtime_ns": stat[1], "status": s.status,
            "message": s.message, "phash": s.found.phash, "width": s.found.width,
            "height": s.found.height,
            "out_width": s.encoded.width if s.encoded else None,
            "out_height": s.encoded.height if s.encoded else None,
        } for path, stat, s in rows], schema=STAGE_SCHEMA)
        self._put(table, f"{name}.feather")
        for k, (path, _, cached) in enumerate(rows):
            self._where[path] = (f"{name}.feather", k, cached)
        pause_point("first-pass-part")

    def _put(self, table: pa.Table, name: str) -> None:
        tmp = self.directory / f".{name}.tmp"
        try:
            with writing(self.directory / name):
                feather.write_feather(table, tmp, compression="uncompressed")
            os.replace(tmp, self.directory / name)
        finally:
            tmp.unlink(missing_ok=True)

    def _images(self, part: str) -> pa.Table | None:
        """The memory-mapped images of ``part`` (None when they are gone)."""
        if part in self._open:
            self._open.move_to_end(part)
            return self._open[part]
        path = self.directory / part.replace(".feather", ".images.feather")
        if not path.is_file():
            return None
        table = feather.read_table(path, memory_map=True)
        self._open[part] = table
        if len(self._open) > OPEN_PARTS:
            self._open.popitem(last=False)
        return table

    def has(self, path: str | None) -> bool:
        """Whether the shard result of ``path`` is cached (else it must be processed)."""
        where = self._where.get(path) if path is not None else None
        if where is None:
            return False
        part, _, cached = where
        return cached.status != "success" or (
            cached.encoded is not None and self._images(part) is not None)

    def result(self, path: str) -> Result:
        """The cached shard result of ``path`` (call :meth:`has` first)."""
        part, row, cached = self._where[path]
        if cached.status != "success" or cached.encoded is None:
            return cached.status, cached.message, None
        data = self._images(part).column("data")[row].as_py()  # type: ignore[union-attr]
        e = cached.encoded
        return "success", None, EncodedImage(data, e.width, e.height, e.original_width,
                                             e.original_height)

    def results(self, items: Iterable[Item], pool: ImagePool) -> Iterator[Result]:
        """Results of ``items`` in order: cached ones read back, the others from ``pool``."""
        ahead, behind = tee(items)
        fresh = pool.map(item for item in ahead if not self.has(item[0]))
        for item in behind:
            yield self.result(item[0]) if self.has(item[0]) else next(fresh)  # type: ignore

    def drop_images(self) -> None:
        """Delete the cached images (after a finished build); the hashes stay."""
        self._open.clear()
        for path in self.directory.glob("part-*.images.feather"):
            path.unlink(missing_ok=True)
