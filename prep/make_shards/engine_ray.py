"""The Ray engine (``make-shards --engine ray``): one Ray task per shard, the same bytes as a
local build.

    driver (this module)                          Ray tasks (any node, one CPU each)
      pending shards ──ShardSpec + ShardBuilder──▶  build_shard (:mod:`.shard`): the images in
      progress bar (images of finished shards),      row order -> ShardWriter -> into ``out``
      at most 2 tasks per CPU in flight              (a shared folder, or the node's upload
                                 ◀──stats──          folder with --out s3://..., uploaded there
                                                     by the task); returns the stats

A task processes its shard's images in order with the same function as the local pool, so every
tar and parquet is byte for byte the one a local build writes. Ray reruns a task whose worker
died (``max_retries``); a shard that still fails (an image that kills the decoder every time) is
returned to the driver, which builds it with the local engine (that image is then recorded as
``failed_worker_died``). Without ``ray_address`` a local Ray instance is started with
``workers`` CPUs (None: one per CPU; 0 counts as 1). Ray is the optional extra
``booru-tagger[ray]``, imported only here.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from tqdm import tqdm

from cli_kit.workers import resolve_workers
from shards.atomic import write_json_atomic
from shards.format import ShardPaths

from ..errors import SettingsError
from ..pause import pause_point
from .plan import ShardSpec
from .shard import BuildShard, EngineOptions, ShardBuilder

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


def write_ray(pending: list[ShardSpec], build: BuildShard, builder: ShardBuilder,
              options: EngineOptions) -> list[ShardSpec]:
    """Build every shard of ``pending`` with ``build`` as Ray tasks; see the module docstring.
    Returns the shards whose task failed after its retries."""
    ray = import_ray()
    started = _connect(ray, options.ray_address, options.workers)
    failed: list[ShardSpec] = []
    try:
        task = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(build)
        shared = ray.put(builder)
        each_sample = partial(pause_point, "task-sample")
        limit = max(1, IN_FLIGHT_PER_CPU * int(ray.cluster_resources().get("CPU", 1)))
        queue, running = list(reversed(pending)), {}
        total = sum(len(spec.rows) for spec in pending)
        with tqdm(total=total, unit="img", desc="make-shards (ray)",
                  disable=not options.progress) as bar:
            while queue or running:
                while queue and len(running) < limit:
                    spec = queue.pop()
                    running[task.remote(spec, shared, None, on_sample=each_sample,
                                        wait_upload=True)] = spec
                ready, _ = ray.wait(list(running), num_returns=1)
                spec = running.pop(ready[0])
                try:
                    stats = ray.get(ready[0])
                except (ray.exceptions.RayError, OSError) as exc:
                    log.warning("%s/%s failed on the cluster after %d retries (%s)",
                                spec.split, spec.name, MAX_RETRIES, type(exc).__name__)
                    failed.append(spec)
                    continue
                _keep_stats(builder, spec, stats)
                bar.update(len(spec.rows))
                log.info("%s/%s: %d of %d samples written", spec.split, spec.name,
                         stats.get("successes", 0), stats.get("count", 0))
    finally:
        if started:
            ray.shutdown()
    return failed


def _keep_stats(builder: ShardBuilder, spec: ShardSpec, stats: dict[str, Any]) -> None:
    """The driver needs every shard's stats for the manifest: a task on another node (with
    --out in object storage) wrote them only there."""
    path = ShardPaths.of(builder.out / spec.split, spec.name).stats
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, stats)
