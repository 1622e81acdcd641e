"""``prep make-tag-index``: posts metadata in, ``tags.csv`` plus report out.

Flow: plan read units (:mod:`.posts_reader`) -> count tags in one streaming pass
(:mod:`.tag_counts`) -> select the index (:mod:`.tag_index`) -> count covered posts in a second
streaming pass -> write ``tags.csv``, ``tags.report.json`` (with the settings used) and
``tags.report.png`` (:mod:`.tag_report`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import EmptyInputError
from .posts_reader import plan_units
from .tag_counts import (
    CATEGORY_NAMES,
    COUNT_COLUMNS,
    CountSettings,
    TagCounts,
    count_covered_posts,
    count_tags,
)
from .tag_index import IndexSettings, select_tags, write_tags_csv
from .tag_report import (
    build_report,
    plot_frequency,
    report_paths,
    write_report_json,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TagIndexJob:
    """Everything one ``make-tag-index`` run needs."""

    posts: tuple[Path, ...]
    out: Path
    count: CountSettings = field(default_factory=CountSettings)
    index: IndexSettings = field(default_factory=IndexSettings)


def job_settings(job: TagIndexJob) -> dict[str, Any]:
    """The settings of a job as a JSON-ready dict (saved in the report)."""
    index = asdict(job.index)
    index["categories"] = [CATEGORY_NAMES[c] for c in job.index.categories]
    index["exclude"] = sorted(job.index.exclude)
    json_path, png_path = report_paths(job.out)
    return {
        "posts": [str(p) for p in job.posts],
        "out": str(job.out),
        "report": str(json_path),
        "plot": str(png_path),
        **asdict(job.count),
        **index,
    }


def _check_counted(counts: TagCounts, job: TagIndexJob) -> None:
    posts = counts.posts
    if posts.read == 0:
        raise EmptyInputError(f"no posts in {', '.join(str(p) for p in job.posts)}")
    if posts.counted == 0:
        reasons = []
        if posts.skipped_status:
            reasons.append(f"{posts.skipped_status} not downloaded (--all-posts counts them)")
        if posts.skipped_min_tags:
            reasons.append(
                f"{posts.skipped_min_tags} with fewer than "
                f"{job.count.min_tags_per_post} tags (--min-tags-per-post)"
            )
        raise EmptyInputError(
            f"none of the {posts.read} posts counts: {'; '.join(reasons) or 'no tags'}"
        )


def make_tag_index(job: TagIndexJob, progress: bool = False) -> dict[str, Any]:
    """Build the tag index of ``job`` and write the CSV, the JSON report and the plot.

    Returns the report. Raises InputError, MissingColumnError, EmptyInputError (see
    :mod:`.errors`) for unusable input and NothingSelectedError when the filters leave no tag.
    """
    started = time.monotonic()
    required = ["tags", "rating"] if job.index.include_ratings else ["tags"]
    units = plan_units(job.posts, COUNT_COLUMNS, required)
    files = {u.path for u in units}
    without_status = sorted(str(u.path) for u in units if "status" not in u.columns)
    if without_status and not job.count.all_posts:
        log.info("no status column in %d of %d files: every row of those counts (%s)",
                 len(set(without_status)), len(files), without_status[0])
    log.info("reading %d files (%d read units)", len(files), len(units))
    counts = count_tags(units, job.count, progress=progress)
    counted_at = time.monotonic()
    log.info("counted %d distinct tags on %d of %d posts in %.1f s", len(counts.tags),
             counts.posts.counted, counts.posts.read, counted_at - started)
    _check_counted(counts, job)
    selection = select_tags(counts, job.index)
    covered = count_covered_posts(units, selection.kept["name"], job.count, progress=progress)
    covered_at = time.monotonic()
    log.info("coverage pass in %.1f s", covered_at - counted_at)
    report = build_report(counts, selection, covered, job_settings(job))
    json_path, png_path = report_paths(job.out)
    write_tags_csv(selection, job.out)
    plot_frequency(counts, selection, png_path)
    report["seconds"] = {
        "count": round(counted_at - started, 3),
        "coverage": round(covered_at - counted_at, 3),
        "total": round(time.monotonic() - started, 3),
    }
    write_report_json(report, json_path)
    return report
