"""What a ``make-shards`` run did: the :class:`ShardReport` and its lines for the terminal.

    train: 1,629 of 1,640 samples in 4 shards, 12.3 MiB
    val: 211 of 212 samples in 1 shard, 1.6 MiB
    status: success 1,840, failed_corrupt 12
    posts: 2,000 read; left out: not downloaded 135, ...
    groups: ... families, ... near-duplicate groups, ...
    wrote shards/ in 41.0 s
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shards.format import SPLITS

from ..folder_input import CaptionMatch


@dataclass
class ShardReport:
    """What a run did: the final manifest and how many shards it found done."""

    manifest: dict[str, Any]
    shards_skipped: int
    seconds: float
    captions: CaptionMatch | None = None  # folder captions against a given tags.csv


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

