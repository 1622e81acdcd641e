"""The input of ``make-shards``: posts files (local or at URLs) with a tag index, or a folder.

    --posts raw/ --tags tags.csv  -> read_posts: downloaded posts with an image_path, one
                                     POSTS_SCHEMA table (+ parent_id, score for curation)
    --posts s3://bucket/raw/      -> the posts files fetched first (:func:`..sources.fetch_posts`),
                                     the images read from the bucket
    --folder DIR [--tags]         -> :mod:`..folder_input`: class subfolders or captions, and
                                     the tag index built from the folder (or matched to --tags)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import EmptyInputError, InputError, SettingsError
from ..folder_input import (
    POSTS_SCHEMA,
    CaptionMatch,
    FolderScan,
    folder_index,
    match_captions,
    scan_folder,
)
from ..labels import LabelIndex, read_tags_csv
from ..posts_reader import (
    JSONL_FILE_SUFFIXES,
    PARQUET_SUFFIXES,
    iter_batches,
    plan_units,
    tag_lists,
)
from ..sources import Root, fetch_posts
from .job import ShardJob

WANTED_COLUMNS = ("site", "id", "md5", "rating", "tags", "image_path", "status", "parent_id",
                  "score")
EXTRA_COLUMNS = pa.schema([("parent_id", pa.int64()), ("score", pa.int64())])  # curation's
PLAN_SCHEMA = pa.schema([*POSTS_SCHEMA, *EXTRA_COLUMNS])
REQUIRED_COLUMNS = ("site", "id", "tags", "image_path")
DOWNLOADED = "downloaded"


@dataclass
class Source:
    """The loaded input: posts (POSTS_SCHEMA), image roots, label space and task."""

    posts: pa.Table
    roots: list[Root]
    counts: dict[str, int]
    index: LabelIndex
    tags_csv: bytes
    task: str  # multilabel | multiclass
    kind: str  # posts | folder-classes | folder-captions
    captions: CaptionMatch | None = None  # folder captions against a given tags.csv


def load_source(job: ShardJob) -> Source:
    """Read posts and tag index, or scan the folder. Raises PrepError subclasses."""
    if bool(job.posts) == bool(job.folder):
        raise SettingsError("give --posts (with --tags) or --folder, not both or neither")
    if job.posts:
        if job.tags is None:
            raise SettingsError("--posts needs --tags (the tags.csv of prep make-tag-index)")
        index, data = read_tags_csv(job.tags)
        posts, roots, counts = _read_posts(job.posts, job.images_root)
        return Source(posts, roots, counts, index, data, "multilabel", "posts")
    scan: FolderScan = scan_folder(job.folder, job.folder_kind)
    captions = None
    if job.tags is not None:
        index, data = read_tags_csv(job.tags)
        if scan.kind == "captions":
            captions = match_captions(scan, index, job.allow_unknown_tags)
    else:
        index, data = folder_index(scan, job.top_k, job.min_count)
    counts = {"posts_read": len(scan.posts) + sum(scan.skipped.values()), **scan.skipped}
    task = "multiclass" if scan.kind == "classes" else "multilabel"
    return Source(scan.posts, [job.folder], counts, index, data, task, f"folder-{scan.kind}",
                  captions)


def _read_posts(inputs: tuple[Root, ...], images_root: Root | None
                ) -> tuple[pa.Table, list[Root], dict[str, int]]:
    """:func:`read_posts`, posts at URLs fetched first (:func:`..sources.fetch_posts`) and
    their images read from the URL their image_path is relative to."""
    paths: list[Path] = []
    url_of: dict[Path, str] = {}  # local folder of fetched posts -> the image root URL
    for entry in inputs:
        if isinstance(entry, Path):
            paths.append(entry)
            continue
        fetched, root = fetch_posts(entry, (*PARQUET_SUFFIXES, *JSONL_FILE_SUFFIXES))
        paths += fetched
        url_of.update((image_root(f), root) for f in fetched)
    posts, roots, counts = read_posts(paths, images_root)
    return posts, [url_of.get(r, r) if isinstance(r, Path) else r for r in roots], counts


def image_root(posts_file: Path) -> Path:
    """Directory that ``image_path`` is relative to: ``raw/`` for ``raw/posts/part.parquet``."""
    parent = posts_file.parent
    return parent.parent if parent.name == "posts" else parent


def _column(batch: pa.RecordBatch, name: str, kind: pa.DataType) -> pa.Array:
    if name not in batch.schema.names:
        return pa.nulls(batch.num_rows, kind)
    array = batch.column(name)
    return tag_lists(array) if name == "tags" else array.cast(kind)
def read_posts(paths: Sequence[Path], images_root: Path | str | None = None,
               batch_size: int = 65_536) -> tuple[pa.Table, list[Path | str], dict[str, int]]:
    """Read the downloaded posts of ``paths`` into one POSTS_SCHEMA table.

    Returns the table, the image roots its ``root`` column points into, and the counts
    ``posts_read`` and ``not_downloaded``. Raises InputError, MissingColumnError,
    EmptyInputError (see :mod:`.errors`).
    """
    units = plan_units(paths, WANTED_COLUMNS, REQUIRED_COLUMNS)
    roots: list[Path | str] = []  # a str: an object-storage URL
    batches: list[pa.RecordBatch] = []
    read = 0
    for unit in units:
        root = images_root or image_root(unit.path)
        if root not in roots:
            roots.append(root)
        for batch in iter_batches(unit, batch_size):
            read += batch.num_rows
            keep = pc.is_valid(batch.column("image_path"))
            if "status" in batch.schema.names:
                keep = pc.and_(keep, pc.fill_null(pc.equal(batch.column("status"), DOWNLOADED),
                                                  False))
            kept = batch.filter(keep)
            try:
                columns = [_column(kept, f.name, f.type) for f in POSTS_SCHEMA
                           if f.name != "root"]
                extra = [_column(kept, f.name, f.type) for f in EXTRA_COLUMNS]
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InputError(f"{unit.path}: unusable posts column ({exc})") from exc
            columns.append(pa.array(np.full(kept.num_rows, roots.index(root), np.int16)))
            batches.append(pa.RecordBatch.from_arrays(columns + extra, schema=PLAN_SCHEMA))
    table = pa.Table.from_batches(batches, schema=PLAN_SCHEMA)
    if read == 0:
        raise EmptyInputError(f"no posts in {', '.join(str(p) for p in paths)}")
    return table, roots, {"posts_read": read, "not_downloaded": read - len(table)}

