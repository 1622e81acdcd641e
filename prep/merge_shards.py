"""`prep merge-shards`: join the parts of a make-shards build split across machines.

    node k:  prep make-shards --posts raw/ --tags tags.csv --out part-k/ \
                 --num-nodes N --node-rank k
    then:    prep merge-shards --parts part-0/ ... part-(N-1)/ --out shards/

Each part holds every N-th shard of the same deterministic plan; merging checks that the parts
come from one build and together hold every shard, copies (or `--move`s) their files, and
writes the final manifest from the shards' stats.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path
from typing import Any

from cli_kit.command_line import HelpFormatter
from shards.errors import ManifestError
from shards.format import TAGS, ShardPaths, sha256_file
from shards.manifest import complete, read_manifest, write_manifest

from .errors import PrepError


def merge_shards(parts: list[Path], out: Path, move: bool = False) -> dict[str, Any]:
    """Join the parts into `out`; returns the final manifest. Raises PrepError."""
    manifests = [_read(part) for part in parts]
    first = manifests[0]
    n = first["partition"]["num_nodes"]
    ranks = sorted(m["partition"]["node_rank"] for m in manifests)
    if ranks != list(range(n)) or len(parts) != n:
        raise PrepError(f"the parts hold ranks {ranks} of a {n}-node build; give all {n}")
    for part, m in zip(parts, manifests, strict=True):
        if m["build"] != first["build"] or m["tags"]["sha256"] != first["tags"]["sha256"]:
            raise PrepError(f"{part} comes from a different build (settings, input or tags)")
    out.mkdir(parents=True, exist_ok=True)
    for part, m in zip(parts, manifests, strict=True):
        for shard in m["partition"]["shards"]:
            split, name = shard.split("/")
            source = ShardPaths.of(part / split, name)
            if not source.done():
                raise PrepError(f"{part}: shard {shard} is not finished; rerun that node")
            target = ShardPaths.of(out / split, name)
            (out / split).mkdir(exist_ok=True)
            for src, dst in ((source.tar, target.tar), (source.parquet, target.parquet),
                             (source.stats, target.stats)):        # stats last: "shard done"
                _transfer(src, dst, move)
    tags = out / TAGS
    if not tags.exists() or sha256_file(tags) != first["tags"]["sha256"]:
        shutil.copyfile(parts[0] / TAGS, tags)
    final = complete(out, {k: v for k, v in first.items() if k != "partition"})
    write_manifest(out, final)
    return final


def _read(part: Path) -> dict[str, Any]:
    try:
        manifest = read_manifest(part)
    except ManifestError as exc:
        raise PrepError(f"{part}: {exc}") from None
    if "partition" not in manifest:
        raise PrepError(f"{part} is not a part of a split build (--num-nodes)")
    return manifest


def _transfer(src: Path, dst: Path, move: bool) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    if move:
        try:
            os.replace(src, dst)
            return
        except OSError:          # another file system: copy, then remove
            pass
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    if move:
        src.unlink()


def add_merge_shards(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser("merge-shards", help="join the parts of a make-shards build "
                                 "split across machines (--num-nodes)", description=__doc__,
                                 formatter_class=HelpFormatter)
    parser.add_argument("--parts", nargs="+", required=True, metavar="DIR",
                        help="the --out folders of the make-shards nodes (required)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the merged shards folder (required)")
    parser.add_argument("--move", action="store_true", help="move the files instead of "
                        "copying them (default: copy)")
    parser.set_defaults(handler=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    final = merge_shards([Path(p) for p in args.parts], Path(args.out), args.move)
    if not args.quiet:
        splits = ", ".join(f"{k}: {v['successes']:,} samples in {len(v['shards'])} shards"
                           for k, v in final["splits"].items())
        print(f"merged {len(args.parts)} parts into {args.out}: {splits}")
    return 0
