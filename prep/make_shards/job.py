"""What one ``make-shards`` run is asked to do: :class:`ShardJob` and its :class:`ShardSettings`.

    ShardJob      the input (posts + tags, or a folder), the output, how to run it
      settings    ShardSettings: what the shards hold (every field is in the manifest)
        image     prep.imaging.ImageSettings: size, resize mode, format, quality, ...
        curation  prep.curation.Curation: filters, dedupe, near-duplicate distance

Two folders are easy to confuse. ``out/.stage/`` is the *first-pass cache*
(:mod:`.first_pass`): the pictures decoded, hashed and encoded once, before the plan. The
*upload folder* (``--staging``, :mod:`.upload`) is where the shards of an object-storage
``--out`` are built before they are uploaded; with a URL ``--out``, ``ShardJob.out`` is that
upload folder and ``ShardJob.store`` the bucket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..curation import Curation
from ..imaging import ImageSettings
from ..sources import Root

ENGINES = ("local", "ray")  # .engine_local (the image pool), .engine_ray (one task per shard)


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

    out: Path  # the shard folder; with a ``store``, the local upload folder (--staging)
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
    engine: str = "local"  # one of ENGINES
    ray_address: str | None = None  # ray: None = a local Ray; auto | HOST:PORT = join
    store: Any = None  # an .upload.RemoteOutput when --out is a URL (out = the upload folder)
