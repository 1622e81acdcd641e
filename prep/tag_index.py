"""Choose the tags of the index and write ``tags.csv``
(docs/DESIGN.md, "Boundary 2: tag index (tags.csv)").

The file has the format of the WD taggers' ``selected_tags.csv``: header
``tag_id,name,category,count``; row *i* is model output *i*. With ``include_ratings`` the four
rating labels come first, in the fixed order ``general, sensitive, questionable, explicit``
(category 9, tag_id 9999999, count = counted posts with that rating), as in the WD taggers whose
consumers read the rating as the argmax of the first four outputs. The selected tags follow,
sorted by count descending, then name ascending (Unicode code point order); their ``tag_id`` is
-1 because posts metadata does not carry the site's tag ids.

Selection, in this order: keep the requested categories, drop excluded names, drop tags seen
fewer than ``min_count`` times, then keep the first ``top_k`` (0 = all) of what is left.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from shards.tags import CSV_HEADER, write_tags

from .errors import NothingSelectedError, SettingsError
from .tag_counts import CATEGORY_CODES, RATING_LABELS, TagCounts

log = logging.getLogger(__name__)

RATING_CATEGORY = 9
RATING_TAG_ID = 9999999  # the id the WD taggers' selected_tags.csv gives the rating labels
UNKNOWN_TAG_ID = -1
DEFAULT_CATEGORIES = ("general", "character")
# Bookkeeping tags that describe the file, the upload or the wiki, not what the image shows.
# Danbooru files them under meta (category 5), but sites without categories report them as
# general tags, so they are excluded by default whatever the categories.
DEFAULT_EXCLUDE = (
    "highres", "absurdres", "incredibly_absurdres", "lowres", "huge_filesize",
    "commentary", "commentary_request", "english_commentary", "chinese_commentary",
    "korean_commentary", "japanese_commentary", "commentary_typo", "symbol-only_commentary",
    "translated", "translation_request", "partially_translated", "check_translation",
    "hard_translated", "bad_id", "bad_pixiv_id", "bad_twitter_id", "bad_link", "bad_source",
    "duplicate", "md5_mismatch", "tagme", "artist_request", "character_request",
    "copyright_request", "source_request", "check_character", "check_copyright",
    "third-party_edit", "revision", "image_sample", "paid_reward_available",
)


@dataclass(frozen=True)
class IndexSettings:
    """What goes into the tag index."""

    top_k: int = 5000  # keep this many tags (ratings not included); 0 keeps every eligible tag
    min_count: int = 1  # drop tags seen on fewer counted posts
    categories: tuple[int, ...] = tuple(CATEGORY_CODES[c] for c in DEFAULT_CATEGORIES)
    exclude: frozenset[str] = field(default_factory=lambda: frozenset(DEFAULT_EXCLUDE))
    include_ratings: bool = False  # put the four rating labels (category 9) first


@dataclass
class Selection:
    """The chosen rows and the bookkeeping the report needs."""

    ratings: pd.DataFrame  # tag_id, name, category, count (empty without include_ratings)
    kept: pd.DataFrame  # tag_id, name, category, count, in output order
    eligible: pd.DataFrame  # every tag that passed the filters, sorted like ``kept``
    dropped: dict[str, int]  # tags dropped per reason: category, excluded, min_count, top_k


def parse_categories(text: str) -> tuple[int, ...]:
    """Parse ``general,character`` (names or codes) into sorted category codes.

    Raises SettingsError for an unknown name, for ``rating`` (use include_ratings) or for an
    empty list.
    """
    codes: set[int] = set()
    for item in (part.strip().lower() for part in text.split(",")):
        if not item:
            continue
        if item in CATEGORY_CODES:
            codes.add(CATEGORY_CODES[item])
        elif item.isdigit() and int(item) in CATEGORY_CODES.values():
            codes.add(int(item))
        elif item in ("rating", "9"):
            raise SettingsError("ratings are not a tag category here: use --include-ratings")
        else:
            known = ", ".join(CATEGORY_CODES)
            raise SettingsError(f"unknown tag category {item!r} (known: {known})")
    if not codes:
        raise SettingsError("no tag category given")
    return tuple(sorted(codes))


def read_exclude(values: Iterable[str], defaults: bool = True) -> frozenset[str]:
    """Build the exclude set from ``--exclude`` values and, if ``defaults``, DEFAULT_EXCLUDE.

    A value naming an existing file is read as one tag per line (blank lines and lines starting
    with ``#`` are skipped); any other value is a comma-separated list of tags. Names are
    compared exactly, after stripping surrounding whitespace.
    Raises SettingsError when a file cannot be read.
    """
    names = set(DEFAULT_EXCLUDE) if defaults else set()
    for value in values:
        path = Path(value)
        if path.is_file():
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise SettingsError(f"cannot read exclude file {path}: {exc}") from exc
            names.update(s for line in lines if (s := line.strip()) and not s.startswith("#"))
        else:
            names.update(s for part in value.split(",") if (s := part.strip()))
    return frozenset(names)


def sort_tags(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort by count descending, then name ascending; return with a fresh index."""
    return frame.sort_values(["count", "name"], ascending=[False, True], kind="stable",
                             ignore_index=True)


def select_tags(counts: TagCounts, settings: IndexSettings) -> Selection:
    """Apply the filters of ``settings`` to the counted tags.

    Raises NothingSelectedError when no tag is left.
    """
    tags = counts.tags
    in_category = tags["category"].isin(settings.categories)
    excluded = tags["name"].isin(settings.exclude)
    if settings.include_ratings:
        clash = in_category & ~excluded & tags["name"].isin(RATING_LABELS)
        if clash.any():
            log.warning("dropping tags named like rating labels: %s",
                        ", ".join(sorted(tags.loc[clash, "name"])))
        excluded |= clash
    frequent = tags["count"] >= settings.min_count
    eligible = sort_tags(tags[in_category & ~excluded & frequent])
    kept = eligible if settings.top_k == 0 else eligible.head(settings.top_k)
    dropped = {
        "category": int((~in_category).sum()),
        "excluded": int((in_category & excluded).sum()),
        "min_count": int((in_category & ~excluded & ~frequent).sum()),
        "top_k": len(eligible) - len(kept),
    }
    if kept.empty:
        raise NothingSelectedError(
            f"no tag left to index: {len(tags)} tags seen, dropped by category "
            f"{dropped['category']}, by exclusion {dropped['excluded']}, "
            f"by min-count {dropped['min_count']}"
        )
    if settings.top_k > len(eligible):
        log.warning("--top-k %d exceeds the %d tags available after filtering; keeping all %d",
                    settings.top_k, len(eligible), len(eligible))
    kept = kept.assign(tag_id=UNKNOWN_TAG_ID)[list(CSV_HEADER)]
    ratings = pd.DataFrame(
        {"tag_id": RATING_TAG_ID, "name": list(RATING_LABELS), "category": RATING_CATEGORY,
         "count": [counts.posts.ratings[r] for r in RATING_LABELS]}
    ) if settings.include_ratings else pd.DataFrame(columns=list(CSV_HEADER))
    return Selection(ratings=ratings, kept=kept, eligible=eligible, dropped=dropped)


def write_tags_csv(selection: Selection, path: Path) -> None:
    """Write the index to ``path`` atomically (temporary file, then rename)."""
    rows: Sequence[pd.DataFrame] = [selection.ratings, selection.kept]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tags(path, (row for frame in rows
                      for row in frame[list(CSV_HEADER)].itertuples(index=False, name=None)))
    log.info("wrote %s (%d rows)", path, sum(len(f) for f in rows))
