"""Count tags and their categories over streamed posts.

Memory is bounded by the number of distinct tags, never by the number of posts: each read unit
(a parquet row group or a JSON-lines file) is read in record batches and reduced with pyarrow
compute to one small table of partial counts, and partial tables are merged with an Arrow
group-by as they arrive. Units run on a thread pool (pyarrow releases the GIL).

Per batch, with no Python loop per post:

1. the posts that count are kept: ``status == "downloaded"`` (every row with ``all_posts`` or when
   there is no status column) and at least ``min_tags_per_post`` entries in ``tags``;
2. posts whose ``tags_<category>`` lists add up to their ``tags`` list (the usual case when the
   site gives categories) are counted from the category lists, which yields count and category
   in one hashing pass (``dictionary_encode``, then ``np.bincount`` of the codes of the selected
   posts, so strings are never copied);
3. the other posts are counted from ``tags``; the category lists they do have only vote.

A tag's category is the one with the most votes (ties go to character, copyright, artist, meta,
general, in that order), or general (0) when no post gives one. ``count`` is the number of
occurrences, which is the number of posts carrying the tag when lists hold no duplicates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from cli_kit.workers import resolve_workers

from .posts_reader import ReadUnit, iter_batches, tag_lists

log = logging.getLogger(__name__)

CATEGORY_CODES = {"general": 0, "artist": 1, "copyright": 3, "character": 4, "meta": 5}
CATEGORY_NAMES = {code: name for name, code in CATEGORY_CODES.items()}
CATEGORY_COLUMNS = {f"tags_{name}": code for name, code in CATEGORY_CODES.items()}
# Tie-break between categories with equal votes: lower rank wins.
_CATEGORY_RANK = {4: 0, 3: 1, 1: 2, 5: 3, 0: 4}
RATING_LABELS = ("general", "sensitive", "questionable", "explicit")
# Dumps of Danbooru's own tables carry its one-letter ratings.
RATING_LETTERS = {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}
COUNT_COLUMNS = ("tags", "status", "rating", *CATEGORY_COLUMNS)
_UNKNOWN = -1
_PARTIAL = pa.schema(
    [("tag", pa.string()), ("cat", pa.int8()), ("count", pa.int64()), ("vote", pa.int64())]
)
T = TypeVar("T")


@dataclass(frozen=True)
class CountSettings:
    """Which posts count, and how the work is split."""

    all_posts: bool = False  # also count posts that were not downloaded (metadata-only)
    min_tags_per_post: int = 0  # posts with fewer entries in `tags` do not count
    batch_size: int = 65_536  # rows per record batch
    workers: int | None = None  # reader threads; None = one per CPU, 0 = in this thread


@dataclass
class PostTally:
    """How many posts were read, and why those that do not count were left out."""

    read: int = 0
    counted: int = 0
    skipped_status: int = 0
    skipped_min_tags: int = 0
    ratings: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RATING_LABELS, 0))
    unrated: int = 0  # counted posts without one of the four rating labels

    def add(self, other: PostTally) -> None:
        """Add ``other``'s numbers to this tally."""
        self.read += other.read
        self.counted += other.counted
        self.skipped_status += other.skipped_status
        self.skipped_min_tags += other.skipped_min_tags
        self.unrated += other.unrated
        for label, n in other.ratings.items():
            self.ratings[label] += n


@dataclass
class TagCounts:
    """Result of counting: one row per distinct tag (``name``, ``category``, ``count``)."""

    tags: pd.DataFrame
    posts: PostTally
    category_conflicts: int  # tags that posts put in more than one category


def select_posts(
    batch: pa.RecordBatch, lengths: np.ndarray, settings: CountSettings, ratings: bool = True
) -> tuple[np.ndarray, PostTally]:
    """Boolean mask of the batch's posts that count, and the tally of posts read and skipped.

    ``lengths`` holds the number of tags of each post. With ``ratings`` (and a ``rating``
    column) the tally also counts the ratings of the counted posts.
    """
    n = batch.num_rows
    names = batch.schema.names
    if settings.all_posts or "status" not in names:
        status_ok = np.ones(n, dtype=bool)
    else:
        downloaded = pc.fill_null(pc.equal(batch.column("status"), "downloaded"), False)
        status_ok = downloaded.to_numpy(zero_copy_only=False)
    mask = status_ok
    if settings.min_tags_per_post > 0:
        mask = mask & (lengths >= settings.min_tags_per_post)
    n_status, counted = int(status_ok.sum()), int(mask.sum())
    tally = PostTally(read=n, counted=counted, skipped_status=n - n_status,
                      skipped_min_tags=n_status - counted)
    tally.unrated = counted
    if ratings and "rating" in names and counted:
        chosen = batch.column("rating")
        if counted < n:
            chosen = chosen.filter(pa.array(mask))
        for item in pc.value_counts(chosen).to_pylist():
            label = RATING_LETTERS.get(item["values"], item["values"])
            if label in tally.ratings:
                tally.ratings[label] += item["counts"]
                tally.unrated -= item["counts"]
    return mask, tally


def list_lengths(lists: pa.Array) -> np.ndarray:
    """Number of values in each list (0 for null) as an int64 numpy array."""
    return pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int64)


def _occurrences(
    lists: pa.Array, selections: Sequence[np.ndarray | None]
) -> list[tuple[pa.Array, np.ndarray]]:
    """For each post selection (None = all posts): distinct values and their occurrences.

    One hashing pass (dictionary_encode) serves every selection; selecting is a numpy mask on
    the codes, so the strings are never copied.
    """
    encoded = pc.dictionary_encode(pc.list_flatten(lists))
    codes = encoded.indices.to_numpy()
    parents = None
    out = []
    for sel in selections:
        chosen = codes
        if sel is not None:
            if parents is None:
                parents = pc.list_parent_indices(lists).to_numpy()
            chosen = codes[sel[parents]]
        n = np.bincount(chosen, minlength=len(encoded.dictionary))
        present = n > 0
        out.append((encoded.dictionary.filter(pa.array(present)), n[present]))
    return out


def _partial(values: pa.Array, n: np.ndarray, cat: int, count: bool, vote: bool) -> pa.Table:
    zeros = np.zeros(len(n), dtype=np.int64)
    return pa.table(
        [values, pa.array(np.full(len(n), cat, dtype=np.int8)),
         pa.array(n if count else zeros), pa.array(n if vote else zeros)],
        schema=_PARTIAL,
    )


def count_batch(batch: pa.RecordBatch, settings: CountSettings) -> tuple[pa.Table, PostTally]:
    """Partial counts (tag, cat, count, vote) and the post tally of one record batch."""
    tags = tag_lists(batch.column("tags"))
    lengths = list_lengths(tags)
    mask, tally = select_posts(batch, lengths, settings)
    if not tally.counted:
        return _PARTIAL.empty_table(), tally
    cats = [(code, tag_lists(batch.column(col)))
            for col, code in CATEGORY_COLUMNS.items() if col in batch.schema.names]
    total = sum((list_lengths(lists) for _, lists in cats), np.zeros(len(lengths), np.int64))
    consistent = mask & (total == lengths) if cats else np.zeros(len(mask), dtype=bool)
    rest = mask & ~consistent
    n_consistent = int(consistent.sum())
    n_rest = tally.counted - n_consistent
    everyone = tally.counted == batch.num_rows
    parts = []
    for code, lists in cats:
        wanted = []
        if n_consistent:
            wanted.append((None if everyone and not n_rest else consistent, True))
        if n_rest:
            wanted.append((rest, False))
        found = _occurrences(lists, [sel for sel, _ in wanted])
        for (values, n), (_, counts) in zip(found, wanted, strict=True):
            parts.append(_partial(values, n, code, count=counts, vote=True))
    if n_rest:
        [(values, n)] = _occurrences(tags, [None if everyone and not n_consistent else rest])
        parts.append(_partial(values, n, _UNKNOWN, count=True, vote=False))
    return pa.concat_tables(parts), tally


def merge_partials(tables: Sequence[pa.Table]) -> pa.Table:
    """Sum partial-count tables by (tag, cat)."""
    merged = pa.concat_tables(tables).group_by(["tag", "cat"], use_threads=False)
    merged = merged.aggregate([("count", "sum"), ("vote", "sum")])
    return merged.rename_columns({"count_sum": "count", "vote_sum": "vote"}).select(
        _PARTIAL.names
    ).cast(_PARTIAL)


def count_unit(unit: ReadUnit, settings: CountSettings) -> tuple[pa.Table, PostTally]:
    """Partial counts and post tally of one read unit."""
    tally = PostTally()
    parts = []
    for batch in iter_batches(unit, settings.batch_size):
        part, batch_tally = count_batch(batch, settings)
        tally.add(batch_tally)
        if part.num_rows:
            parts.append(part)
    return (merge_partials(parts) if parts else _PARTIAL.empty_table()), tally


def map_units(
    fn: Callable[[ReadUnit], T], units: Sequence[ReadUnit], workers: int | None
) -> Iterator[T]:
    """Apply ``fn`` to every unit on a pool of ``workers`` threads (None: one per CPU; 0: in
    this thread, one unit at a time), yielding results in unit order.

    At most ``2 * workers`` units are in flight, so results waiting to be merged stay bounded.
    """
    workers = resolve_workers(workers)
    if workers == 0:
        yield from map(fn, units)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prep") as pool:
        pending: list[Future[T]] = []
        todo = iter(units)
        for unit in todo:
            pending.append(pool.submit(fn, unit))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.pop(0).result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            yield result


def _progress(units: Sequence[ReadUnit], enabled: bool, desc: str) -> tqdm:
    sizes = [u.num_rows for u in units]
    total = None if None in sizes else sum(s or 0 for s in sizes)
    return tqdm(total=total, unit=" posts", unit_scale=True, desc=desc,
                disable=None if enabled else True)


def resolve_categories(partials: pa.Table) -> tuple[pd.DataFrame, int]:
    """Turn merged partial counts into one row per tag: ``name``, ``category``, ``count``.

    Returns the frame (tags never counted are left out) and the number of tags that posts put
    in more than one category.
    """
    df = partials.to_pandas()
    counts = df.groupby("tag", sort=False)["count"].sum()
    counts = counts[counts > 0]
    votes = df[(df["cat"] >= 0) & (df["vote"] > 0)].copy()
    votes["rank"] = votes["cat"].map(_CATEGORY_RANK)
    best = votes.sort_values(["tag", "vote", "rank"], ascending=[True, False, True])
    best = best.drop_duplicates("tag").set_index("tag")["cat"]
    conflicts = int((votes.groupby("tag").size() > 1).sum())
    category = best.reindex(counts.index).fillna(0).astype("int64")
    frame = pd.DataFrame(
        {"name": counts.index.astype(str), "category": category.to_numpy(),
         "count": counts.to_numpy().astype("int64")}
    )
    return frame, conflicts


def count_tags(
    units: Sequence[ReadUnit], settings: CountSettings, progress: bool = False
) -> TagCounts:
    """Count every tag of the posts that count, over all units (first pass)."""
    tally = PostTally()
    merged = _PARTIAL.empty_table()
    pending: list[pa.Table] = []
    pending_rows = 0
    with _progress(units, progress, "counting tags") as bar:
        for part, unit_tally in map_units(lambda u: count_unit(u, settings), units,
                                          settings.workers):
            tally.add(unit_tally)
            bar.update(unit_tally.read)
            pending.append(part)
            pending_rows += part.num_rows
            if pending_rows > max(1_000_000, 2 * merged.num_rows):
                merged = merge_partials([merged, *pending])
                pending, pending_rows = [], 0
    merged = merge_partials([merged, *pending])
    frame, conflicts = resolve_categories(merged)
    log.debug("counted %d distinct tags on %d posts", len(frame), tally.counted)
    return TagCounts(tags=frame, posts=tally, category_conflicts=conflicts)


def _covered_in_unit(unit: ReadUnit, kept: pa.Array, settings: CountSettings) -> tuple[int, int]:
    covered = read = 0
    for batch in iter_batches(unit, settings.batch_size):
        tags = tag_lists(batch.column("tags"))
        mask, tally = select_posts(batch, list_lengths(tags), settings, ratings=False)
        read += tally.read
        if not tally.counted:
            continue
        hit = pc.is_in(pc.list_flatten(tags), value_set=kept).to_numpy(zero_copy_only=False)
        parents = pc.list_parent_indices(tags).to_numpy()
        has_kept = np.zeros(batch.num_rows, dtype=bool)
        has_kept[parents[hit]] = True
        covered += int((has_kept & mask).sum())
    return covered, read


def _only_columns(unit: ReadUnit, names: Sequence[str]) -> ReadUnit:
    schema = unit.json_schema
    if schema is not None:
        schema = pa.schema([f for f in schema if f.name in names])
    return replace(unit, columns=tuple(c for c in unit.columns if c in names), json_schema=schema)


def count_covered_posts(
    units: Sequence[ReadUnit], kept: Iterable[str], settings: CountSettings,
    progress: bool = False,
) -> int:
    """Number of counted posts carrying at least one of the ``kept`` tags (second pass)."""
    kept_array = pa.array(sorted(set(kept)), pa.string())
    if not len(kept_array):
        return 0
    slim = [_only_columns(u, ("tags", "status")) for u in units]
    covered = 0
    with _progress(slim, progress, "coverage") as bar:
        for n, read in map_units(lambda u: _covered_in_unit(u, kept_array, settings), slim,
                                 settings.workers):
            covered += n
            bar.update(read)
    return covered
