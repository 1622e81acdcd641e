"""Which posts become samples, and in which split and shard they go.

    posts (:mod:`.source`: raw/posts parquet parts, any posts file, or a folder scan)
      -> keep status == "downloaded" with an image_path       (else: not_downloaded)
      -> sort by (site, id); a repeated (site, id) is kept once (duplicate_post)
      -> a repeated md5 is kept once, the first by (site, id)  (duplicate_md5; not with
         dedupe "none")
      -> drop posts with no tag in the index unless keep_untagged (untagged)
      -> filters, the first pass (:mod:`.first_pass`: every picture hashed), families and
         near-duplicate groups (:mod:`..curation`)
      -> split by a hash of the group's anchor (site, id) (:mod:`..split`): a group never
         straddles train and val
      -> cut each split, in (site, id) order, into shards of samples_per_shard

Everything here is a function of the input rows, the tag index and the settings, so the same
inputs give the same shards. The plan holds the selected posts' metadata as one Arrow table
(roughly 300-500 bytes per post with ~25 tags: ~0.5 GB per million posts); images are never
held here. Each shard carries a digest of its rows and the plan a digest of all of them, which
``make-shards`` stores in the manifest to recognise an unchanged input on resume.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shards.format import make_key, shard_name

from ..curation import Hasher, curate
from ..errors import EmptyInputError, InputError
from ..labels import LabelIndex
from ..sources import Root
from ..split import split_point
from .job import ShardSettings
from .source import EXTRA_COLUMNS

log = logging.getLogger(__name__)

@dataclass
class ShardSpec:
    """One shard to write: its split, number, rows (POSTS_SCHEMA) and their digest."""

    split: str
    index: int
    rows: pa.Table
    digest: str

    @property
    def name(self) -> str:
        return shard_name(self.index)


@dataclass
class Plan:
    """The shards of a build, the image roots their ``root`` column indexes, and counts."""

    shards: list[ShardSpec]
    roots: list[Root]  # a str: an object-storage URL (:mod:`..sources`)
    counts: dict[str, int] = field(default_factory=dict)
    digest: str = ""
    grouping: dict = field(default_factory=dict)  # :func:`.curation.curate`'s summary


def _first_of(values: pa.Array) -> np.ndarray:
    """Mask of the rows whose (non-null) value was not seen in an earlier row."""
    seen: set = set()
    keep = np.ones(len(values), dtype=bool)
    for i, value in enumerate(values.to_pylist()):
        if value is None:
            continue
        if value in seen:
            keep[i] = False
        else:
            seen.add(value)
    return keep


def _digest_rows(rows: pa.Table) -> str:
    digest = hashlib.sha256()
    columns = [rows.column(n).to_pylist() for n in
               ("site", "id", "md5", "rating", "tags", "image_path", "root", "phash",
                "duplicate_of")]
    for site, post_id, md5, rating, tags, path, root, phash, dup in zip(*columns, strict=True):
        line = (f"{site}\t{post_id}\t{md5}\t{rating}\t{' '.join(tags or [])}\t{root}:{path}"
                f"\t{phash}\t{dup}\n")
        digest.update(line.encode())
    return digest.hexdigest()


def plan_shards(posts: pa.Table, roots: list[Root], index: LabelIndex,
                settings: ShardSettings, *, counts: dict[str, int] | None = None,
                hasher: Hasher | None = None) -> Plan:
    """Select, order, curate, split and cut ``posts`` (POSTS_SCHEMA, optionally with
    parent_id and score) as ``settings`` say (its image settings are not used here).
    ``counts`` are the input's counts so far (posts_read, ...); ``hasher`` gives the
    pictures' FileHash for the groups (without one, only families group). Raises
    EmptyInputError."""
    counts = dict(counts or {})
    curation = settings.curation
    samples_per_shard, val_fraction = settings.samples_per_shard, settings.val_fraction
    for extra in EXTRA_COLUMNS:
        if extra.name not in posts.column_names:
            posts = posts.append_column(extra, pa.nulls(len(posts), extra.type))
    posts = posts.take(pc.sort_indices(posts, [("site", "ascending"), ("id", "ascending")]))
    pairs = pc.binary_join_element_wise(posts["site"], pc.cast(posts["id"], pa.string()), ":")
    unique_post = _first_of(pairs.combine_chunks())
    counts["duplicate_post"] = int((~unique_post).sum())
    posts = posts.filter(pa.array(unique_post))
    if curation.dedupe != "none":
        unique_md5 = _first_of(posts["md5"].combine_chunks())
        counts["duplicate_md5"] = int((~unique_md5).sum())
        posts = posts.filter(pa.array(unique_md5))
    tagged = index.count_tagged(posts["tags"].combine_chunks()).to_numpy() > 0
    counts["untagged"] = int((~tagged).sum())
    if not settings.keep_untagged:
        posts = posts.filter(pa.array(tagged))
    curated = curate(posts, curation, hasher)
    posts = curated.posts
    counts.update(curated.counts)
    counts["selected"] = len(posts)
    if len(posts) == 0:
        raise EmptyInputError(_nothing_selected(counts, settings.keep_untagged))
    points = np.array([split_point(s, i) for s, i in
                       zip(posts["anchor_site"].to_pylist(), posts["anchor_id"].to_pylist(),
                           strict=True)])
    shards: list[ShardSpec] = []
    for split, mask in (("train", points >= val_fraction), ("val", points < val_fraction)):
        rows = posts.filter(pa.array(mask))
        counts[split] = len(rows)
        for number, start in enumerate(range(0, len(rows), samples_per_shard)):
            part = rows.slice(start, samples_per_shard)
            shards.append(ShardSpec(split, number, part, _digest_rows(part)))
    _check_keys(posts)
    plan_digest = hashlib.sha256("".join(f"{s.split}/{s.name}:{s.digest}\n"
                                         for s in shards).encode()).hexdigest()
    log.info("plan: %d posts read, %d selected: %d train, %d val, in %d shards",
             counts.get("posts_read", len(posts)), counts["selected"], counts["train"],
             counts["val"], len(shards))
    curated.grouping["split"] = {split: counts[split] for split in ("train", "val")}
    return Plan(shards, roots, counts, plan_digest, curated.grouping)


def _check_keys(posts: pa.Table) -> None:
    keys = [make_key(s, i) for s, i in zip(posts["site"].to_pylist(), posts["id"].to_pylist(),
                                           strict=True)]
    if len(set(keys)) != len(keys):  # only if two site names differ in punctuation alone
        raise InputError("two sites map to the same sample key prefix; "
                              "rename one of them in the posts metadata")


def _nothing_selected(counts: dict[str, int], keep_untagged: bool) -> str:
    parts = [f"{counts.get('posts_read', 0)} posts read"]
    for name, text in (("not_downloaded", "not downloaded or without image_path"),
                       ("duplicate_post", "repeated (site, id)"),
                       ("duplicate_md5", "repeated md5"),
                       ("untagged", "with no tag in the index"),
                       ("filtered_rating", "left out by --ratings"),
                       ("filtered_tags", "left out by --exclude-tags"),
                       ("filtered_score", "left out by --min-score"),
                       ("filtered_min_side", "left out by --min-side"),
                       ("filtered_aspect", "left out by --max-aspect")):
        if counts.get(name):
            parts.append(f"{counts[name]} {text}")
    hint = "" if keep_untagged else " (--keep-untagged keeps posts without indexed tags)"
    return "no post to put in shards: " + ", ".join(parts) + hint
