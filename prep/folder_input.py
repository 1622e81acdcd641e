"""``make-shards --folder DIR``: a folder of images instead of a scrape.

Two layouts (``kind``; ``auto`` picks ``captions`` when any image has a caption file):

- ``classes``: each first-level subfolder is a class (``DIR/mona/*.png``, ``DIR/other/x/*.jpg``);
  a sample's one label is its class; the task is multiclass. Images directly in DIR are skipped.
- ``captions``: images anywhere under DIR beside ``<stem>.txt`` files of comma-separated tags
  (``DIR/a/001.png`` + ``DIR/a/001.txt``); commas and newlines separate tags, surrounding
  whitespace is stripped, repeats are dropped; the task is multilabel. An image without a
  caption has no tags.

Images are the files with an image suffix (case-insensitive), hidden files and folders left
out (:mod:`.image_files`, the rule ``tag`` and ``tag review`` use too). Each becomes a post of
site ``folder`` whose ``id`` is a 56-bit hash of its path relative to DIR, so ids, keys and
the train/val split of a file stay put when files are added; ``md5`` is the md5 of its bytes
(duplicates are kept once). The tag index is built from the labels: count descending, then
name; category 0; ``top_k`` (0 = all) and ``min_count`` apply.

With a given ``tags.csv`` (a model's, after ``tag review``), caption tags match its rows in
either spelling (:func:`.labels.tag_key`); :func:`match_captions` counts the distinct caption
tags that match no row and refuses a folder where most of them match nothing (the wrong
``tags.csv``, or captions of another vocabulary) unless told to go on.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow as pa

from shards.tags import decode_tags, tags_bytes

from .errors import EmptyInputError, InputError, SettingsError
from .image_files import find_images, is_image_name
from .imaging import IMAGE_SUFFIXES
from .labels import LabelIndex, index_of
from .sources import Root, list_files, location, open_source, read_source

log = logging.getLogger(__name__)

FOLDER_SITE = "folder"
FOLDER_KINDS = ("auto", "classes", "captions")
POSTS_SCHEMA = pa.schema([
    ("site", pa.string()), ("id", pa.int64()), ("md5", pa.string()), ("rating", pa.string()),
    ("tags", pa.list_(pa.string())), ("image_path", pa.string()), ("root", pa.int16()),
])


UNKNOWN_SHOWN = 5  # commonest unknown caption tags named


@dataclass
class CaptionMatch:
    """How the distinct tags of a folder's captions match a given tag index."""

    distinct: int  # distinct caption tags
    unknown: Counter[str]  # those that match no row -> images captioned with them

    def line(self) -> str:
        """One line: how many match no row, and the commonest of them."""
        common = ", ".join(f"{t!r} ({n})" for t, n in self.unknown.most_common(UNKNOWN_SHOWN))
        return (f"{len(self.unknown):,} of {self.distinct:,} distinct caption tags match no row "
                f"of tags.csv" + (f" (commonest: {common})" if common else ""))


@dataclass
class FolderScan:
    """What a folder holds: its kind, one row per image (POSTS_SCHEMA) and tag counts."""

    kind: str  # classes | captions
    posts: pa.Table
    tag_counts: Counter[str]
    skipped: dict[str, int]  # reason -> files


def parse_caption(text: str) -> list[str]:
    """Tags of a caption file: split on commas and newlines, stripped, first occurrence kept."""
    tags = (t.strip() for line in text.splitlines() for t in line.split(","))
    return list(dict.fromkeys(t for t in tags if t))


def path_id(relative: str) -> int:
    """A stable 56-bit id for a file, from its POSIX path relative to the folder."""
    return int.from_bytes(hashlib.blake2b(relative.encode(), digest_size=7).digest(), "big")


def _md5(where: str) -> str | None:
    digest = hashlib.md5()
    try:
        with open_source(where) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        log.warning("cannot read %s: %s", where, exc)
        return None
    return digest.hexdigest()


def _read_caption(root: Root, relative: str, files: set[str] | None) -> list[str] | None:
    """The tags of the caption beside ``relative`` (None: no caption). ``files``: every file
    of a URL root (a local root is asked directly)."""
    name = PurePosixPath(relative).with_suffix(".txt").as_posix()
    where = location(root, name)
    if where is None or (name not in files if files is not None else not Path(where).is_file()):
        return None
    try:
        return parse_caption(read_source(where).decode("utf-8-sig"))
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read caption %s: %s (image kept without tags)", where, exc)
        return []


def _listing(root: Root) -> tuple[list[str], set[str] | None]:
    """The images of ``root`` (relative POSIX paths, sorted) and, for a URL, every file name."""
    if isinstance(root, str):
        files = set(list_files(root))
        images = sorted(n for n in files if is_image_name(n))
        return images, files
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    return [p.relative_to(root).as_posix() for p in find_images(root)], None


def scan_folder(root: Root, kind: str = "auto") -> FolderScan:
    """List the images of ``root`` (a folder or a URL) with their tags. Raises InputError,
    EmptyInputError."""
    if kind not in FOLDER_KINDS:
        raise SettingsError(f"unknown folder kind {kind!r} (known: {', '.join(FOLDER_KINDS)})")
    images, files = _listing(root)
    if not images:
        raise EmptyInputError(f"{root}: no image files (looked for "
                              f"{', '.join(sorted(IMAGE_SUFFIXES))})")
    captions = {p: _read_caption(root, p, files) for p in images} if kind != "classes" else {}
    if kind == "auto":
        kind = "captions" if any(c is not None for c in captions.values()) else "classes"
    rows: dict[str, list] = {name: [] for name in POSTS_SCHEMA.names}
    counts: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for relative in images:
        if kind == "classes":
            if "/" not in relative:
                skipped["outside_class_folder"] += 1
                continue
            tags = [relative.split("/", 1)[0]]
        else:
            tags = captions[relative] or []
        counts.update(tags)
        for name, value in (("site", FOLDER_SITE), ("id", path_id(relative)),
                            ("md5", _md5(location(root, relative))), ("rating", None),
                            ("tags", tags), ("image_path", relative), ("root", 0)):
            rows[name].append(value)
    if len(set(rows["id"])) != len(rows["id"]):  # 56-bit hash: never in practice
        raise InputError(f"{root}: two file paths hash to the same id; rename one of them")
    if not rows["id"]:
        raise EmptyInputError(f"{root}: no caption files and no class folders: put a "
                              "<image name>.txt of comma-separated tags beside each image, or "
                              "the images of each class in a subfolder of its own (two "
                              "classes at least)")
    if kind == "classes" and len(counts) == 1:    # `train` refuses it (train/shard_fit.py)
        log.info("%s: every image is in one folder (%s/) and none has a caption file: one "
                    "class, nothing to tell apart; a classifier needs two classes at least, "
                    "one subfolder each (or a <image name>.txt of tags beside each image)",
                    root, next(iter(counts)))
    if skipped:
        log.warning("%s: %d images directly in the folder belong to no class and are skipped",
                    root, skipped["outside_class_folder"])
    posts = pa.Table.from_pydict(rows, schema=POSTS_SCHEMA)
    log.info("%s: %d images, %d %s (%s layout)", root, len(posts), len(counts),
             "classes" if kind == "classes" else "distinct tags", kind)
    return FolderScan(kind, posts, counts, dict(skipped))


def match_captions(scan: FolderScan, index: LabelIndex, allow_unknown: bool = False
                   ) -> CaptionMatch:
    """Match the caption tags of ``scan`` to ``index``; logs the unknown ones. Raises InputError
    when more than half of the distinct caption tags match no row, unless ``allow_unknown``."""
    match = CaptionMatch(len(scan.tag_counts), index.unknown(scan.tag_counts))
    if 2 * len(match.unknown) > match.distinct and not allow_unknown:
        raise InputError(f"{match.line()}: is this the tags.csv the captions were written "
                         "with? --allow-unknown-tags builds the shards anyway, without them")
    if match.unknown:
        log.warning("%s; they are not labels", match.line())
    return match


def folder_index(scan: FolderScan, top_k: int = 0, min_count: int = 1) -> tuple[LabelIndex,
                                                                                  bytes]:
    """The tag index of a folder scan and its ``tags.csv`` bytes. Raises InputError if empty."""
    ranked = sorted(((n, c) for n, c in scan.tag_counts.items() if c >= min_count),
                    key=lambda item: (-item[1], item[0]))
    if top_k:
        ranked = ranked[:top_k]
    if not ranked:
        raise EmptyInputError(f"no label in the folder has at least {min_count} images "
                              "(--min-count)")
    data = tags_bytes([(-1, name, 0, count) for name, count in ranked])
    return index_of(decode_tags(data, "folder tag index")), data
