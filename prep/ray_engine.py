"""``make-shards --engine ray``: one Ray task per shard, the same bytes as a local build.

    driver (make_shards)                         Ray tasks (any node, one CPU each)
      plan -> pending shards ──ShardSpec──▶  build_shard: images in row order -> ShardWriter
      progress bar (images of finished       -> into ``out`` (a shared folder, or the node's
      shards), at most 2 tasks per CPU in        staging folder with --out s3://...: uploaded
      flight                     ◀──stats──      there by the task), returns the stats

A task processes its shard's images in order with the same function as the local pool, so every
tar and parquet is byte for byte the one a local build writes. Ray reruns a task whose worker
died (``max_retries``); a shard that still fails (an image that kills the decoder every time) is
built on the driver with the local pool, which records that image as ``failed_worker_died``.
Without ``ray_address`` (or ``auto``) a local Ray instance is started with ``workers`` CPUs
(None: one per CPU; 0 counts as 1).
Ray is the optional extra ``booru-tagger[ray]``, imported only here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cli_kit.workers import resolve_workers
from shards.atomic import write_json_atomic
from shards.format import ShardPaths
from shards.writer import ShardWriter

from .errors import SettingsError
from .image_pool import Item, Result, process_item
from .imaging import ImageSettings
from .labels import LabelIndex
from .pause import pause_point
from .shard_plan import Plan, ShardSpec

log = logging.getLogger(__name__)

MAX_RETRIES = 3  # reruns of a task whose worker process or node died
IN_FLIGHT_PER_CPU = 2


def import_ray() -> Any:
    """The ray module, or SettingsError naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise SettingsError("--engine ray needs Ray: pip install 'booru-tagger[ray]'") from None
    return ray


def build_shard(spec: ShardSpec, roots: list[Path], index: LabelIndex, out: Path,
                image: ImageSettings, store: Any = None,
                process: Callable[[Item, ImageSettings], Result] = process_item
                ) -> dict[str, Any]:
    """Process the images of one shard in order and write it under ``out``; with ``store``
    (a :class:`.remote_output.RemoteOutput`) upload it. Returns the shard's stats."""
    from .make_shards import _items, shard_samples

    results = (process(item, image) for item in _items([spec], roots))
    with ShardWriter(out / spec.split, spec.name, image_ext=image.format,
                     extra_stats={"split": spec.split}) as writer:
        for sample in shard_samples(spec, results, index, image.format):
            writer.write(sample)
            pause_point("task-sample")
    if store is not None:
        store.put_shard(out, spec.split, spec.name)
        store.wait()
    return writer.stats or {}


def _connect(ray: Any, address: str | None, workers: int | None) -> bool:
    """Connect to (or start) Ray; True when this call started it."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=max(1, resolve_workers(workers)), include_dashboard=False,
                 log_to_driver=False)
    return True


def write_shards_ray(pending: list[ShardSpec], plan: Plan, index: LabelIndex, out: Path,
                     image: ImageSettings, *, address: str | None = None,
                     workers: int | None = None, store: Any = None, progress: bool = False,
                     process: Callable[[Item, ImageSettings], Result] = process_item,
                     fallback: Callable[[list[ShardSpec]], None] | None = None) -> None:
    """Write every shard of ``pending`` with Ray tasks; see the module docstring.

    ``fallback`` builds shards whose task failed after its retries (the local pool);
    without it the failure is raised."""
    ray = import_ray()
    started = _connect(ray, address, workers)
    try:
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(build_shard)
        shared = [ray.put(x) for x in (plan.roots, index, out, image, store, process)]
        limit = max(1, IN_FLIGHT_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
        queue, running, failed = list(reversed(pending)), {}, []
        total = sum(len(spec.rows) for spec in pending)
        with tqdm(total=total, unit="img", desc="make-shards (ray)",
                  disable=not progress) as bar:
            while queue or running:
                while queue and len(running) < limit:
                    spec = queue.pop()
                    running[task.remote(spec, *shared)] = spec
                ready, _ = ray.wait(list(running), num_returns=1)
                spec = running.pop(ready[0])
                try:
                    stats = ray.get(ready[0])
                except (ray.exceptions.RayError, OSError) as exc:
                    log.warning("%s/%s failed on the cluster after %d retries (%s)",
                                spec.split, spec.name, MAX_RETRIES, type(exc).__name__)
                    if fallback is None:
                        raise
                    failed.append(spec)
                    continue
                _keep_stats(out, spec, stats)
                bar.update(len(spec.rows))
                log.info("%s/%s: %d of %d samples written", spec.split, spec.name,
                         stats.get("successes", 0), stats.get("count", 0))
    finally:
        if started:
            ray.shutdown()
    if failed and fallback is not None:
        log.warning("building %d shard(s) here with the local pool", len(failed))
        fallback(failed)


def _keep_stats(out: Path, spec: ShardSpec, stats: dict[str, Any]) -> None:
    """The driver needs every shard's stats for the manifest: a task on another node (with
    --out in object storage) wrote them only there."""
    path = ShardPaths.of(out / spec.split, spec.name).stats
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, stats)
