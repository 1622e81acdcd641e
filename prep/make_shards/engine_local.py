"""The local engine (the default): every pending shard built in this process, in order, from
one stream of image results.

    pending shards -> ShardBuilder.items (every picture of every shard, in row order)
      -> results: the first-pass cache's encoded images (:mod:`.first_pass`), the others
         processed by the ImagePool (``workers`` processes, :mod:`..image_pool`)
      -> build_shard for each shard in turn (:mod:`.shard`), one progress bar for all

The pool works ahead across shard boundaries, so the next shard's images are being processed
while one shard is written (and, with a store, while it uploads).
"""

from __future__ import annotations

import logging

from tqdm import tqdm

from cli_kit.workers import resolve_workers

from ..image_pool import ImagePool
from ..pause import pause_point
from .plan import ShardSpec
from .shard import BuildShard, EngineOptions, ShardBuilder

log = logging.getLogger(__name__)


def write_local(pending: list[ShardSpec], build: BuildShard, builder: ShardBuilder,
                options: EngineOptions) -> list[ShardSpec]:
    """Build every shard of ``pending`` with ``build`` here; see the module docstring.
    Returns the shards it could not build: none (a failure is raised)."""
    workers = resolve_workers(options.workers)
    total = sum(len(spec.rows) for spec in pending)
    with ImagePool(builder.image, workers) as pool, tqdm(
            total=total, unit="img", desc="make-shards", disable=not options.progress) as bar:
        items = builder.items(pending)
        cache = options.cache
        results = cache.results(items, pool) if cache is not None else pool.map(items)
        for spec in pending:
            stats = build(spec, builder, results, on_sample=bar.update)
            log.info("%s/%s: %d of %d samples written", spec.split, spec.name,
                     stats.get("successes", 0), stats.get("count", 0))
            pause_point("shard-done")
    return []
