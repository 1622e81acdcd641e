"""``prep make-shards``: posts + images + tag index in, WebDataset shards out
(docs/DESIGN.md, "Boundary 3: shards (shards/)").

    prep make-shards --posts raw/ --tags tags.csv --out shards/
    prep make-shards --folder my_images/ --out shards/
    prep make-shards --posts s3://bucket/raw/ --tags tags.csv --out shards/   # (.sources)

Flow: load the input (:mod:`.shard_plan` reads posts; :mod:`.folder_input` scans a folder and
builds its tag index) -> lock ``out/`` -> first pass (:mod:`.stage`: every candidate picture
prepared, hashed and encoded once, staged in ``out/.stage/``) -> plan samples, groups
(:mod:`.curation`), splits and shards -> check ``out/``
(:mod:`.shard_output`: a manifest with another ``build`` record means other arguments or
input: refuse, or clear with ``overwrite``) -> write ``tags.csv`` and a manifest marked
incomplete -> for every shard without its ``_stats.json``, take its images from the stage
(or process them: :mod:`.image_pool`, ``workers`` processes) and write it with
:class:`shards.ShardWriter` -> rewrite the manifest, complete, with the counts -> drop the
staged images.

An interrupted run leaves finished shards under their final names and the shard in progress
under temporary names; the same command finishes the job, redoing only unfinished shards.
With ``engine="ray"`` the shards are written by Ray tasks (:mod:`.ray_engine`); with a
``store`` (``--out s3://...``, :mod:`.remote_output`) ``out`` is a local staging folder and
each finished shard is uploaded, the manifest last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from cli_kit.workers import resolve_workers
from shards.atomic import write_bytes_atomic
from shards.format import SPLITS, TAGS, ShardPaths, make_key, sha256_file
from shards.manifest import write_manifest
from shards.writer import ShardWriter

from .curation import SKIPPED_NEAR, Curation
from .errors import SettingsError
from .folder_input import CaptionMatch, FolderScan, folder_index, match_captions, scan_folder
from .image_pool import ImagePool, Item, Result
from .imaging import ImageSettings
from .labels import LabelIndex, read_tags_csv
from .pause import pause_point
from .posts_reader import JSONL_FILE_SUFFIXES, PARQUET_SUFFIXES
from .shard_output import (
    locked,
    manifest,
    prepare_output,
    refuse_other_settings,
    remove_temporaries,
)
from .shard_plan import Plan, ShardSpec, image_root, plan_shards, read_posts
from .sources import Root, fetch_posts, location
from .stage import PART_ROWS, STAGE_DIR, Stage

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ShardSettings:
    """What the shards hold; every field is recorded in the manifest."""

    samples_per_shard: int = 10_000
    val_fraction: float = 0.02  # share of posts in val, by a hash of their group's (site, id)
    keep_untagged: bool = False  # keep posts none of whose tags is in the index
    image: ImageSettings = field(default_factory=ImageSettings)
    curation: Curation = field(default_factory=Curation)  # filters, dedupe, near distance


@dataclass(frozen=True)
class ShardJob:
    """Everything one ``make-shards`` run needs. Give ``posts`` + ``tags``, or ``folder``."""

    out: Path
    posts: tuple[Root, ...] = ()  # a Root is a local Path or an object-storage URL (str)
    tags: Path | None = None
    folder: Root | None = None
    folder_kind: str = "auto"  # auto | classes | captions
    top_k: int = 0  # folder tag index: keep this many labels (0 = all)
    min_count: int = 1  # folder tag index: drop labels on fewer images
    allow_unknown_tags: bool = False  # folder + tags: build when most caption tags are unknown
    images_root: Root | None = None  # image_path is relative to this (default: from --posts)
    settings: ShardSettings = field(default_factory=ShardSettings)
    workers: int | None = None  # image processes; None = one per CPU, 0 or 1 = in this process
    overwrite: bool = False
    node_rank: int = 0  # with num_nodes > 1: build only shards i with i % num_nodes == rank
    num_nodes: int = 1  # (then `prep merge-shards` joins the parts into one dataset)
    engine: str = "local"  # local (the image pool) | ray (.ray_engine: one task per shard)
    ray_address: str | None = None  # ray: None = a local Ray; auto | HOST:PORT = join
    store: Any = None  # a .remote_output.RemoteOutput when --out is a URL (out = staging)


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
    """:func:`.shard_plan.read_posts`, posts at URLs fetched first (:func:`.sources.fetch_posts`)
    and their images read from the URL their image_path is relative to."""
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


def build_record(job: ShardJob, source: Source, plan: Plan | None) -> dict[str, Any]:
    """The part of the manifest that must match for a rerun to resume (JSON-ready); without
    ``plan``, all of it but the plan's fields."""
    record: dict[str, Any] = {
        "input": source.kind,
        "task": source.task,
        "samples_per_shard": job.settings.samples_per_shard,
        "val_fraction": job.settings.val_fraction,
        "keep_untagged": job.settings.keep_untagged,
        "image": asdict(job.settings.image),
        "curation": job.settings.curation.record(),
        "tags_sha256": hashlib.sha256(source.tags_csv).hexdigest(),
    }
    if plan is not None:
        record.update(plan_sha256=plan.digest, samples=plan.counts["selected"])
    if job.folder and job.tags is None:
        record["folder_index"] = {"top_k": job.top_k, "min_count": job.min_count}
    return json.loads(json.dumps(record))


def _safe_path(root: Root, image_path: str) -> str | None:
    """Where the picture ``image_path`` of ``root`` is read (None: an unsafe image_path)."""
    return location(root, image_path)


def _items(pending: list[ShardSpec], roots: list[Root]) -> Iterator[Item]:
    for spec in pending:
        for root, image_path, dup in zip(spec.rows["root"].to_pylist(),
                                         spec.rows["image_path"].to_pylist(),
                                         spec.rows["duplicate_of"].to_pylist(), strict=True):
            if dup is None:  # a near-duplicate left out is not decoded
                yield _safe_path(roots[root], image_path), image_path


def shard_samples(spec: ShardSpec, results: Iterator[Result], index: LabelIndex,
                  ext: str) -> Iterator[dict[str, Any]]:
    """The ShardWriter samples of one shard in plan order: each row with the next image result,
    except a near-duplicate left out, which takes none (it is never decoded: see `_items`)."""
    for row in spec.rows.to_pylist():
        result = (SKIPPED_NEAR, f"near-duplicate of {row['duplicate_of']}", None) \
            if row.get("duplicate_of") else next(results)
        yield sample_of(row, result, index, ext)


def sample_of(row: dict[str, Any], result: Result, index: LabelIndex, ext: str) -> dict[str, Any]:
    """The ShardWriter sample of one planned row and its image result."""
    status, message, encoded = result
    key = make_key(row["site"], row["id"])
    tags = row["tags"] or []
    names, ids = index.labels(tags, row["rating"])
    meta = {
        "key": key, "site": row["site"], "id": row["id"], "md5": row["md5"],
        "rating": row["rating"], "tags": tags, "labels": names, "label_ids": ids,
        "width": encoded.width if encoded else None,
        "height": encoded.height if encoded else None,
        "original_width": encoded.original_width if encoded else None,
        "original_height": encoded.original_height if encoded else None,
        "image_path": row["image_path"],
        "phash": row.get("phash"), "duplicate_of": row.get("duplicate_of"),
    }
    sample = {"__key__": key, "json": meta, "status": status, "error_message": message}
    if encoded is not None:
        sample[ext] = encoded.data
    return sample


def write_shards(pending: list[ShardSpec], plan: Plan, index: LabelIndex, job: ShardJob,
                 progress: bool = False, stage: Stage | None = None) -> None:
    """Process (or take from ``stage``) the images of every shard of ``pending`` and write the
    shards, in order."""
    out, image = job.out, job.settings.image
    if job.engine == "ray":
        from .ray_engine import write_shards_ray
        local = replace(job, engine="local")
        return write_shards_ray(pending, plan, index, out, image, address=job.ray_address,
                                workers=job.workers, store=job.store, progress=progress,
                                fallback=lambda specs: write_shards(specs, plan, index, local))
    workers = resolve_workers(job.workers)
    total = sum(len(spec.rows) for spec in pending)
    with ImagePool(image, workers) as pool, tqdm(total=total, unit="img", desc="make-shards",
                                                 disable=not progress) as bar:
        items = _items(pending, plan.roots)
        results = stage.results(items, pool) if stage is not None else pool.map(items)
        for spec in pending:
            with ShardWriter(out / spec.split, spec.name, image_ext=image.format,
                             extra_stats={"split": spec.split}) as writer:
                for sample in shard_samples(spec, results, index, image.format):
                    writer.write(sample)
                    bar.update()
            if job.store is not None:
                job.store.put_shard(out, spec.split, spec.name)
            stats = writer.stats or {}
            log.info("%s/%s: %d of %d samples written", spec.split, spec.name,
                     stats.get("successes", 0), stats.get("count", 0))
            pause_point("shard-done")


@dataclass
class ShardReport:
    """What a run did: the final manifest and how many shards it found done."""

    manifest: dict[str, Any]
    shards_skipped: int
    seconds: float
    captions: CaptionMatch | None = None  # folder captions against a given tags.csv


def make_shards(job: ShardJob, progress: bool = False) -> ShardReport:
    """Build (or finish building) the shards of ``job``.

    Raises PrepError subclasses for unusable input, settings or output folders.
    """
    started = time.monotonic()
    source = load_source(job)
    settings = job.settings
    # the shards are made here, in one piece: the first pass keeps its encoded images
    local = job.engine == "local" and job.num_nodes == 1
    stage = Stage(job.out / STAGE_DIR, settings.image, keep_images=local,
                  part_rows=min(settings.samples_per_shard, PART_ROWS))
    with locked(job.out):  # the first pass already writes its stage in out/
        if job.store is None:  # refuse other settings before the first pass, not after
            refuse_other_settings(job.out, build_record(job, source, None), job.overwrite)
        plan = plan_shards(source.posts, source.roots, source.index, settings.samples_per_shard,
                           settings.val_fraction, settings.keep_untagged, source.counts,
                           settings.curation, _hasher(job, source.roots, stage, progress))
        build = build_record(job, source, plan)
        report = _build(job, source, plan, build, started, progress, stage)
    report.captions = source.captions
    return report


def _hasher(job: ShardJob, roots: list[Root], stage: Stage, progress: bool):
    """The plan's first pass: the FileHash of each row's picture, staged in out/.stage."""
    def hasher(rows: pa.Table):
        paths = [_safe_path(roots[r], p) for r, p in
                 zip(rows["root"].to_pylist(), rows["image_path"].to_pylist(), strict=True)]
        return stage.run(paths, resolve_workers(job.workers), progress)
    return hasher


def _build(job: ShardJob, source: Source, plan: Plan, build: dict[str, Any], started: float,
           progress: bool, stage: Stage | None = None) -> ShardReport:
    if job.store is not None:
        resumed = job.store.prepare(job.out, build, job.overwrite)
    else:
        resumed = prepare_output(job.out, build, job.overwrite)
    if stage is not None:
        stage.forget_others()
    remove_temporaries(job.out)
    tags_copy = job.out / TAGS
    if not tags_copy.is_file() or sha256_file(tags_copy) != build["tags_sha256"]:
        write_bytes_atomic(tags_copy, source.tags_csv)
    write_manifest(job.out, _manifest(job, source, plan, build, complete=False))
    if job.store is not None:
        job.store.begin(job.out)
    for split in SPLITS:
        (job.out / split).mkdir(exist_ok=True)
    mine = [s for i, s in enumerate(plan.shards) if i % job.num_nodes == job.node_rank]
    pending = [s for s in mine if not _done(job, s)]
    if resumed:
        log.info("resuming: %d of %d shards already done", len(plan.shards) - len(pending),
                 len(plan.shards))
    write_shards(pending, plan, source.index, job, progress, stage)
    if job.num_nodes > 1:       # one part of a split build: `prep merge-shards` completes it
        part = _manifest(job, source, plan, build, complete=False)
        part["partition"] = {"node_rank": job.node_rank, "num_nodes": job.num_nodes,
                             "shards": [f"{s.split}/{s.name}" for s in mine]}
        write_manifest(job.out, part)
        return ShardReport(part, len(mine) - len(pending), time.monotonic() - started)
    final = _manifest(job, source, plan, build, complete=True)
    write_manifest(job.out, final)
    if stage is not None:
        stage.drop_images()
    if job.store is not None:
        job.store.finish(job.out)
    seconds = time.monotonic() - started
    log.info("done in %.1f s: %s", seconds, final["status"])
    return ShardReport(final, len(plan.shards) - len(pending), seconds)


def _done(job: ShardJob, spec: ShardSpec) -> bool:
    if job.store is not None:
        return job.store.done(job.out, spec.split, spec.name)
    return ShardPaths.of(job.out / spec.split, spec.name).done()


def _manifest(job: ShardJob, source: Source, plan: Plan, build: dict[str, Any],
              complete: bool) -> dict[str, Any]:
    tags_source = str(job.tags) if job.tags else f"built from {job.folder}"
    return manifest(job.out, plan, build, task=source.task, tag_rows=len(source.index.names),
                    tags_source=tags_source, image=job.settings.image, complete=complete)


def grouping_lines(grouping: dict[str, Any]) -> list[str]:
    """The summary's lines about families, near-duplicates and the group-aware split."""
    if not grouping:
        return []
    return [f"groups: {grouping['families']:,} families ({grouping['posts_in_families']:,} "
            f"posts), {grouping['near_duplicate_groups']:,} near-duplicate groups "
            f"({grouping['posts_in_near_duplicate_groups']:,} posts, pHash within "
            f"{grouping['near_distance']} bits); {grouping['posts_kept_together']:,} posts kept "
            f"together in {grouping['groups_kept_together']:,} groups on one side of the split"
            f"; dedupe {grouping['dedupe']}"]


def shards_summary(report: ShardReport, out: Path | str) -> str:
    """A few lines for the terminal."""
    manifest = report.manifest
    if "partition" in manifest:
        part = manifest["partition"]
        return (f"part {part['node_rank']} of {part['num_nodes']}: {len(part['shards'])} "
                f"shards in {out} ({report.shards_skipped} already done); join the parts with "
                "`prep merge-shards`")
    counts = manifest["selection"]
    lines = []
    for split in SPLITS:
        info = manifest["splits"][split]
        n = len(info["shards"])
        lines.append(f"{split}: {info['successes']:,} of {info['count']:,} samples in {n} "
                     f"shard{'s' * (n != 1)}, {info['bytes'] / 2**20:,.1f} MiB")
    lines.append("status: " + ", ".join(f"{k} {v:,}" for k, v in manifest["status"].items()))
    skipped = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in counts.items()
                        if v and k not in ("posts_read", "selected", "train", "val"))
    lines.append(f"posts: {counts.get('posts_read', 0):,} read"
                 + (f"; left out: {skipped}" if skipped else ""))
    lines.extend(grouping_lines(manifest.get("grouping") or {}))
    if report.captions is not None:
        lines.append("captions: " + report.captions.line())
    if report.shards_skipped:
        lines.append(f"resumed: {report.shards_skipped} shards were already done")
    lines.append(f"wrote {out} in {report.seconds:.1f} s")
    return "\n".join(lines)

