"""make-shards past one machine: ``--engine``, ``--ray-address``, ``--staging`` and URL outputs.

    prep make-shards ... --out s3://bucket/ds/                   # local pool, upload to a bucket
    prep make-shards ... --out s3://bucket/ds/ --engine ray --ray-address auto

The flags are registered here and turned into the ``out``, ``engine``, ``ray_address`` and
``store`` fields of :class:`.make_shards.job.ShardJob` (:mod:`.make_shards.engine_ray`,
:mod:`.make_shards.upload`). ``--staging`` names the *upload folder*, where the shards of a URL
``--out`` are built before upload (not the first-pass cache, ``out/.stage/``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shards.storage import is_object_url

from .errors import SettingsError
from .make_shards.job import ENGINES


def add_scale_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--engine``, ``--ray-address`` and ``--staging`` to the make-shards parser."""
    group = parser.add_argument_group("past one machine")
    group.add_argument("--engine", choices=ENGINES, default="local",
                       help="local: a pool of --workers processes; ray: one Ray task per "
                       "shard on a Ray cluster (pip install 'booru-tagger[ray]')")
    group.add_argument("--ray-address", metavar="auto|HOST:PORT",
                       help="with --engine ray: the cluster to join (auto: the one `ray start` "
                       "set up on this machine); default: start a local Ray with --workers CPUs")
    group.add_argument("--staging", metavar="DIR",
                       help="with a URL --out: the local upload folder, where each shard is built "
                       "before upload (default: a folder per URL under the system temp dir)")


def scale_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ShardJob fields ``out``, ``engine``, ``ray_address`` and ``store`` of ``args``.

    Raises SettingsError for combinations that cannot work."""
    if args.ray_address and args.engine != "ray":
        raise SettingsError("--ray-address needs --engine ray")
    if not is_object_url(args.out):
        if args.staging:
            raise SettingsError("--staging is for an object-storage --out (s3://..., gs://...)")
        return {"out": Path(args.out), "engine": args.engine, "ray_address": args.ray_address,
                "store": None}
    if args.num_nodes > 1:
        raise SettingsError("--num-nodes builds parts into local folders for `prep "
                            "merge-shards`; with an object-storage --out use --engine ray")
    from .make_shards.upload import RemoteOutput, default_upload_dir

    store = RemoteOutput(args.out)
    upload_dir = Path(args.staging) if args.staging else default_upload_dir(args.out)
    return {"out": upload_dir, "engine": args.engine, "ray_address": args.ray_address,
            "store": store}
