"""Writing one shard: the one per-shard build function every engine runs.

    ShardSpec (planned rows) + the results of its images, in row order
      -> shard_samples: each row with its result (a near-duplicate left out takes none)
      -> shards.ShardWriter: <key>.jpg/.json in the tar, one parquet row per sample, stats
      -> with a store (--out s3://...): the finished shard handed to the uploader

The engines (:mod:`.engine_local`, :mod:`.engine_ray`) are peers with one signature,
:data:`Engine`: they receive the pending shards, this module's :func:`build_shard` and the
:class:`ShardBuilder` every shard of the build shares, and decide only where and in which
order the shards are built. So a shard is byte for byte the same whichever engine built it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shards.format import make_key
from shards.writer import ShardWriter

from ..curation import SKIPPED_NEAR
from ..image_pool import Item, Result, process_item
from ..imaging import ImageSettings
from ..labels import LabelIndex
from ..sources import Root, location
from .first_pass import FirstPassCache
from .plan import ShardSpec


@dataclass(frozen=True)
class ShardBuilder:
    """What every shard of one build shares. Picklable: the Ray engine ships it to its tasks."""

    roots: list[Root]  # the plan's image roots, indexed by a row's ``root``
    index: LabelIndex
    out: Path  # the shard folder (with a store: the local upload folder)
    image: ImageSettings
    store: Any = None  # an .upload.RemoteOutput: each finished shard is uploaded

    def items(self, specs: Iterable[ShardSpec]) -> Iterator[Item]:
        """The pictures to process for ``specs``, in row order; a near-duplicate left out is
        not decoded, so it has no item."""
        for spec in specs:
            for root, image_path, dup in zip(spec.rows["root"].to_pylist(),
                                             spec.rows["image_path"].to_pylist(),
                                             spec.rows["duplicate_of"].to_pylist(), strict=True):
                if dup is None:
                    yield location(self.roots[root], image_path), image_path


def build_shard(spec: ShardSpec, builder: ShardBuilder, results: Iterator[Result] | None = None,
                *, on_sample: Callable[[], Any] | None = None, wait_upload: bool = False
                ) -> dict[str, Any]:
    """Write the shard ``spec`` under ``builder.out``; returns its stats.

    ``results`` are its images' results in row order (taken from a longer iterator, as the
    local engine does for all its shards); None processes them here, one after the other (a
    Ray task). ``on_sample`` is called after each sample. With a store the shard is then
    uploaded in the background, or before returning with ``wait_upload``.
    """
    if results is None:
        results = (process_item(item, builder.image) for item in builder.items([spec]))
    image = builder.image
    with ShardWriter(builder.out / spec.split, spec.name, image_ext=image.format,
                     extra_stats={"split": spec.split}) as writer:
        for sample in shard_samples(spec, results, builder.index, image.format):
            writer.write(sample)
            if on_sample is not None:
                on_sample()
    if builder.store is not None:
        builder.store.put_shard(builder.out, spec.split, spec.name)
        if wait_upload:
            builder.store.wait()
    return writer.stats or {}


def shard_samples(spec: ShardSpec, results: Iterator[Result], index: LabelIndex,
                  ext: str) -> Iterator[dict[str, Any]]:
    """The ShardWriter samples of one shard in plan order: each row with the next image result,
    except a near-duplicate left out, which takes none (it has no item: see
    :meth:`ShardBuilder.items`)."""
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


@dataclass(frozen=True)
class EngineOptions:
    """How an engine runs (never what it writes)."""

    # local: image processes (None = one per CPU, 0 or 1 = in this process); ray: CPUs of a
    # local Ray
    workers: int | None = None
    progress: bool = False
    ray_address: str | None = None  # ray: None = start a local Ray; auto | HOST:PORT = join
    cache: FirstPassCache | None = None  # local: the first pass's encoded images


BuildShard = Callable[..., dict[str, Any]]  # :func:`build_shard`
# an engine builds ``pending`` with ``build``; returns the shards it could not build
Engine = Callable[[list[ShardSpec], BuildShard, ShardBuilder, EngineOptions], list[ShardSpec]]
