"""The driver of ``make-shards``: from a :class:`.job.ShardJob` to a finished shard folder.

    load the input (:mod:`.source`) -> lock ``out/`` -> refuse other settings (:mod:`.output`)
    -> the first pass (:mod:`.first_pass`: every picture prepared, hashed and encoded once,
       cached in ``out/.stage/``) -> the plan (:mod:`.plan`: samples, groups, splits, shards)
    -> check ``out/`` (:mod:`.output`; a bucket: :mod:`.upload`) -> write ``tags.csv`` and a
       manifest marked incomplete -> the engine (:mod:`.engine_local` or :mod:`.engine_ray`)
       builds every shard without its ``_stats.json`` with :func:`.shard.build_shard` ->
       rewrite the manifest, complete, with the counts -> drop the cached images.

An interrupted run leaves finished shards under their final names and the shard in progress
under temporary names; the same command finishes the job, redoing only unfinished shards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import pyarrow as pa

from cli_kit.workers import resolve_workers
from shards.atomic import write_bytes_atomic
from shards.format import SPLITS, TAGS, ShardPaths, sha256_file
from shards.manifest import write_manifest

from ..sources import Root, location
from .engine_local import write_local
from .engine_ray import write_ray
from .first_pass import FIRST_PASS_DIR, PART_ROWS, FirstPassCache
from .job import ShardJob
from .output import locked, manifest, prepare_output, refuse_other_settings, remove_temporaries
from .plan import Plan, ShardSpec, plan_shards
from .report import ShardReport
from .shard import Engine, EngineOptions, ShardBuilder, build_shard
from .source import Source, load_source

log = logging.getLogger(__name__)

ENGINE_OF: dict[str, Engine] = {"local": write_local, "ray": write_ray}


@dataclass(frozen=True)
class _Run:
    """One run of :func:`make_shards` once its input is read and planned."""

    job: ShardJob
    source: Source
    plan: Plan
    build: dict[str, Any]  # the build record (:func:`build_record`)
    cache: FirstPassCache
    progress: bool
    started: float


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


def make_shards(job: ShardJob, progress: bool = False) -> ShardReport:
    """Build (or finish building) the shards of ``job``.

    Raises PrepError subclasses for unusable input, settings or output folders.
    """
    started = time.monotonic()
    source = load_source(job)
    settings = job.settings
    # the shards are made here, in one piece: the first pass keeps its encoded images
    local = job.engine == "local" and job.num_nodes == 1
    cache = FirstPassCache(job.out / FIRST_PASS_DIR, settings.image, keep_images=local,
                           part_rows=min(settings.samples_per_shard, PART_ROWS))
    with locked(job.out):  # the first pass already writes its cache in out/
        if job.store is None:  # refuse other settings before the first pass, not after
            refuse_other_settings(job.out, build_record(job, source, None), job.overwrite)
        plan = plan_shards(source.posts, source.roots, source.index, settings,
                           counts=source.counts,
                           hasher=_hasher(job, source.roots, cache, progress))
        build = build_record(job, source, plan)
        report = _build(_Run(job, source, plan, build, cache, progress, started))
    report.captions = source.captions
    return report


def _hasher(job: ShardJob, roots: list[Root], cache: FirstPassCache, progress: bool):
    """The plan's first pass: the FileHash of each row's picture, cached in out/.stage."""
    def hasher(rows: pa.Table):
        paths = [location(roots[r], p) for r, p in
                 zip(rows["root"].to_pylist(), rows["image_path"].to_pylist(), strict=True)]
        return cache.run(paths, resolve_workers(job.workers), progress)
    return hasher


def _build(run: _Run) -> ShardReport:
    job, plan, build = run.job, run.plan, run.build
    if job.store is not None:
        resumed = job.store.prepare(job.out, build, job.overwrite)
    else:
        resumed = prepare_output(job.out, build, job.overwrite)
    run.cache.forget_others()
    remove_temporaries(job.out)
    tags_copy = job.out / TAGS
    if not tags_copy.is_file() or sha256_file(tags_copy) != build["tags_sha256"]:
        write_bytes_atomic(tags_copy, run.source.tags_csv)
    write_manifest(job.out, _manifest(run, complete=False))
    if job.store is not None:
        job.store.begin(job.out)
    for split in SPLITS:
        (job.out / split).mkdir(exist_ok=True)
    mine = [s for i, s in enumerate(plan.shards) if i % job.num_nodes == job.node_rank]
    pending = [s for s in mine if not _done(job, s)]
    if resumed:
        log.info("resuming: %d of %d shards already done", len(plan.shards) - len(pending),
                 len(plan.shards))
    _write_shards(run, pending)
    if job.num_nodes > 1:       # one part of a split build: `prep merge-shards` completes it
        part = _manifest(run, complete=False)
        part["partition"] = {"node_rank": job.node_rank, "num_nodes": job.num_nodes,
                             "shards": [f"{s.split}/{s.name}" for s in mine]}
        write_manifest(job.out, part)
        return ShardReport(part, len(mine) - len(pending), time.monotonic() - run.started)
    final = _manifest(run, complete=True)
    write_manifest(job.out, final)
    run.cache.drop_images()
    if job.store is not None:
        job.store.finish(job.out)
    seconds = time.monotonic() - run.started
    log.info("done in %.1f s: %s", seconds, final["status"])
    return ShardReport(final, len(plan.shards) - len(pending), seconds)


def _write_shards(run: _Run, pending: list[ShardSpec]) -> None:
    """Build ``pending`` with the job's engine; what it could not build, with the local one."""
    job = run.job
    builder = ShardBuilder(run.plan.roots, run.source.index, job.out, job.settings.image,
                           job.store)
    options = EngineOptions(workers=job.workers, progress=run.progress,
                            ray_address=job.ray_address, cache=run.cache)
    failed = ENGINE_OF[job.engine](pending, build_shard, builder, options)
    if failed:
        log.warning("building %d shard(s) here with the local pool", len(failed))
        write_local(failed, build_shard, builder, replace(options, cache=None, progress=False))


def _done(job: ShardJob, spec: ShardSpec) -> bool:
    if job.store is not None:
        return job.store.done(job.out, spec.split, spec.name)
    return ShardPaths.of(job.out / spec.split, spec.name).done()


def _manifest(run: _Run, complete: bool) -> dict[str, Any]:
    job = run.job
    tags_source = str(job.tags) if job.tags else f"built from {job.folder}"
    return manifest(job.out, run.plan, run.build, task=run.source.task,
                    tag_rows=len(run.source.index.names), tags_source=tags_source,
                    image=job.settings.image, complete=complete)
