"""The report of ``prep make-tag-index``: numbers, JSON file, text summary and frequency plot.

Written next to the CSV: ``tags.csv`` gets ``tags.report.json`` (numbers and the settings used)
and ``tags.report.png`` (log-log rank vs count of the eligible tags, with the cut marked).

Coverage, over the counted posts:

- ``posts``: share of counted posts carrying at least one kept tag (rating labels not included);
- ``occurrences``: share of all tag occurrences on counted posts that belong to kept tags;
- ``eligible_occurrences``: the same share among occurrences of eligible tags (those that passed
  the category, exclusion and min-count filters), i.e. what the top-k cut alone keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from shards.atomic import atomic_write, write_json_atomic

from .tag_counts import CATEGORY_NAMES, TagCounts
from .tag_index import Selection

REPORT_FORMAT = "booru-tagger/tag-index-report/1"


def report_paths(csv_path: Path) -> tuple[Path, Path]:
    """``tags.csv`` -> (``tags.report.json``, ``tags.report.png``) in the same directory."""
    stem = csv_path.name[: -len(".csv")] if csv_path.name.endswith(".csv") else csv_path.name
    return (csv_path.with_name(stem + ".report.json"), csv_path.with_name(stem + ".report.png"))


def _share(part: int, whole: int) -> float:
    return round(part / whole, 6) if whole else 0.0


def build_report(
    counts: TagCounts, selection: Selection, covered_posts: int, settings: dict[str, Any]
) -> dict[str, Any]:
    """Gather the numbers of one index build into a JSON-ready dict."""
    posts = counts.posts
    kept, eligible = selection.kept, selection.eligible
    total_occ = int(counts.tags["count"].sum())
    eligible_occ = int(eligible["count"].sum())
    kept_occ = int(kept["count"].sum())
    last = kept.iloc[-1]
    beyond = eligible.iloc[len(kept):]
    return {
        "format": REPORT_FORMAT,
        "settings": settings,
        "posts": {
            "read": posts.read,
            "counted": posts.counted,
            "skipped_status": posts.skipped_status,
            "skipped_min_tags": posts.skipped_min_tags,
            "with_kept_tag": covered_posts,
            "ratings": dict(posts.ratings),
            "unrated": posts.unrated,
        },
        "tags": {
            "seen": len(counts.tags),
            "eligible": len(eligible),
            "kept": len(kept),
            "rating_labels": len(selection.ratings),
            "dropped": selection.dropped,
            "category_conflicts": counts.category_conflicts,
            "kept_by_category": {
                CATEGORY_NAMES[int(c)]: int(n)
                for c, n in kept["category"].value_counts().sort_index().items()
            },
        },
        "occurrences": {"total": total_occ, "eligible": eligible_occ, "kept": kept_occ},
        "coverage": {
            "posts": _share(covered_posts, posts.counted),
            "occurrences": _share(kept_occ, total_occ),
            "eligible_occurrences": _share(kept_occ, eligible_occ),
        },
        "cut": {
            "last_kept_name": str(last["name"]),
            "last_kept_count": int(last["count"]),
            "first_dropped_count": int(beyond["count"].iloc[0]) if len(beyond) else None,
            "ties_dropped": int((beyond["count"] == last["count"]).sum()),
        },
    }


def write_report_json(report: dict[str, Any], path: Path) -> None:
    """Write the report as indented JSON, atomically."""
    write_json_atomic(path, report)


def format_summary(report: dict[str, Any]) -> str:
    """A few human-readable lines summarising the report."""
    p, t, c, cut = report["posts"], report["tags"], report["coverage"], report["cut"]
    dropped = ", ".join(f"{k} {v}" for k, v in t["dropped"].items())
    ratings = f" + {t['rating_labels']} rating labels" if t["rating_labels"] else ""
    return "\n".join([
        f"posts: {p['read']} read, {p['counted']} counted "
        f"({p['skipped_status']} skipped by status, {p['skipped_min_tags']} by min-tags)",
        f"tags: {t['seen']} seen, {t['eligible']} eligible, {t['kept']} kept{ratings} "
        f"(dropped: {dropped})",
        f"coverage: {c['posts']:.2%} of counted posts have a kept tag; kept tags cover "
        f"{c['occurrences']:.2%} of tag occurrences ({c['eligible_occurrences']:.2%} of eligible)",
        f"cut: last kept tag {cut['last_kept_name']!r} with count {cut['last_kept_count']}"
        + (f" ({cut['ties_dropped']} more with that count left out, by name order)"
           if cut["ties_dropped"] else ""),
    ])


def _log_spaced(n: int, points: int = 2000) -> np.ndarray:
    """Indices 0..n-1 thinned to about ``points`` log-spaced values (all kept when fewer)."""
    if n <= points:
        return np.arange(n)
    return np.unique(np.geomspace(1, n, points).astype(np.int64) - 1)


def plot_frequency(counts: TagCounts, selection: Selection, path: Path) -> None:
    """Draw the log-log rank/count curve of all and of eligible tags with the cut marked."""
    fig = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for values, label, style in (
        (np.sort(counts.tags["count"].to_numpy())[::-1], "all tags seen", {"color": "0.7"}),
        (selection.eligible["count"].to_numpy(), "eligible tags", {"color": "C0"}),
    ):
        idx = _log_spaced(len(values))
        ax.plot(idx + 1, values[idx], label=label, lw=1.5, **style)
    k = len(selection.kept)
    last = int(selection.kept["count"].iloc[-1])
    ax.axvline(k, color="C3", ls="--", lw=1, label=f"cut: top {k}")
    ax.axhline(last, color="C3", ls=":", lw=1, label=f"last kept count: {last}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("posts with tag (count)")
    ax.set_title(f"Tag frequency over {counts.posts.counted} counted posts")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    fig.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)
    with atomic_write(path) as fh:
        fig.savefig(fh, format="png")
