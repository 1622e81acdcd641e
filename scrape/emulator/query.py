"""Tag search syntax shared by the emulated sites, compiled to a vectorised block filter.

Supported: plain tags (all must match), `-tag` (must not), `*` wildcards, and the metatags
`rating:`, `id:`, `score:`, `width:`, `height:`, `status:`, `md5:`, `parent:`, `order:`/`sort:`
and `limit:`. Unknown metatags are treated as plain tags (they match nothing), as the sites do.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

import numpy as np

from .world import RATINGS, Block, World

RATING_WORDS = {"g": "g", "general": "g", "s": "s", "sensitive": "s", "safe": "s",
                "q": "q", "questionable": "q", "e": "e", "explicit": "e"}
# Danbooru's metatags that do not count towards the tag limit (post_query.rb UNLIMITED_METATAGS).
FREE_METATAGS = {"status", "rating", "limit", "is", "id", "date", "age", "filesize", "filetype",
                 "parent", "child", "md5", "width", "height", "duration", "mpixels", "ratio",
                 "score", "upvote", "downvotes", "favcount", "embedded", "tagcount", "pixiv_id",
                 "pixiv"}
_RANGE = re.compile(r"^(<=|>=|<|>|=)?(-?\d+)(?:\.\.(-?\d+))?$")


class QueryError(ValueError):
    """A search the site refuses (bad syntax, conflicting metatags)."""


@dataclass
class Query:
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    ranges: list[tuple[str, str, int, int | None]] = field(default_factory=list)
    ratings: set[str] | None = None
    status: str | None = None           # None: the site's default; "any", "deleted", "active"...
    md5: str | None = None
    order: str | None = None            # id, id_desc, score, score_asc, ...
    limit: int | None = None
    counted: int = 0                    # terms that count towards Danbooru's tag limit

    @property
    def ascending(self) -> bool:
        return self.order in {"id", "id_asc"}


def parse(text: str) -> Query:
    """Parse a space-separated tag search."""
    q = Query()
    for term in text.split():
        neg = term.startswith("-") and len(term) > 1
        body = term[1:] if neg else term
        name, sep, value = body.partition(":")
        name = name.lower()
        if not sep or not value or name not in _METATAGS:
            (q.exclude if neg else q.include).append(body)
            q.counted += 1
            continue
        if name not in FREE_METATAGS:
            q.counted += 1
        _METATAGS[name](q, value.lower(), neg)
    return q


def _rating(q: Query, value: str, neg: bool) -> None:
    wanted = {RATING_WORDS[v] for v in value.split(",") if v in RATING_WORDS}
    if neg:
        wanted = set(RATINGS) - wanted
    q.ratings = wanted if q.ratings is None else q.ratings & wanted


def _range(name: str):
    def add(q: Query, value: str, neg: bool) -> None:
        m = _RANGE.match(value)
        if not m:
            raise QueryError(f"invalid {name}: value {value!r}")
        op, a, b = m.group(1) or "=", int(m.group(2)), m.group(3)
        if b is not None:
            q.ranges.append((name, "..", a, int(b)))
        else:
            q.ranges.append((name, op, a, None))
        if neg:
            q.ranges[-1] = (name, "!" + q.ranges[-1][1], a, q.ranges[-1][3])
    return add


def _order(q: Query, value: str, neg: bool) -> None:
    if q.order is not None:
        raise QueryError("You cannot use more than one order: metatag")
    q.order = value.replace(":asc", "_asc").replace(":desc", "_desc")


def _status(q: Query, value: str, neg: bool) -> None:
    q.status = value


def _md5(q: Query, value: str, neg: bool) -> None:
    q.md5 = value


def _limit(q: Query, value: str, neg: bool) -> None:
    if neg or not value.isdigit():
        raise QueryError("Invalid limit: metatag")
    q.limit = int(value)


_METATAGS = {"rating": _rating, "id": _range("id"), "score": _range("score"),
             "width": _range("width"), "height": _range("height"), "parent": _range("parent"),
             "order": _order, "sort": _order, "status": _status, "md5": _md5, "limit": _limit}
_COLUMN = {"score": "score", "width": "width", "height": "height", "parent": "parent"}


def compile_filter(q: Query, world: World, default_status: str = "any"):
    """A function `Block -> bool mask` for the query. `md5:` is checked by the caller."""
    vocab = world.vocab
    include = [_tag_ids(vocab, t) for t in q.include]
    exclude = [_tag_ids(vocab, t) for t in q.exclude]
    ratings = None if q.ratings is None else [list(RATINGS).index(r) for r in q.ratings]
    status = q.status or default_status

    def match(blk: Block) -> np.ndarray:
        mask = np.ones(len(blk.ids), dtype=bool)
        for ids in include:
            mask &= np.isin(blk.tags, ids).any(axis=1)
        for ids in exclude:
            mask &= ~np.isin(blk.tags, ids).any(axis=1)
        if ratings is not None:
            mask &= np.isin(blk.cols["rating"], ratings)
        for name, op, a, b in q.ranges:
            col = blk.ids if name == "id" else blk.cols[_COLUMN[name]]
            mask &= compare(col, op, a, b)
        deleted = blk.cols["deleted"]
        if status == "deleted":
            mask &= deleted
        elif status == "active":
            mask &= ~deleted & ~blk.cols["pending"] & ~blk.cols["flagged"]
        elif status in {"pending", "flagged", "banned"}:
            mask &= blk.cols[status]
        elif status == "visible":          # Moebooru and Gelbooru: deleted posts left out
            mask &= ~deleted
        return mask

    return match


def compare(col: np.ndarray, op: str, a: int, b: int | None) -> np.ndarray:
    neg = op.startswith("!")
    op = op.lstrip("!")
    result = {"=": col == a, "<": col < a, ">": col > a, "<=": col <= a, ">=": col >= a,
              "..": (col >= a) & (col <= (b if b is not None else a))}[op]
    return ~result if neg else result


def _tag_ids(vocab, term: str) -> np.ndarray:
    if "*" in term:
        return np.array([i for i, n in enumerate(vocab.names) if fnmatch.fnmatchcase(n, term)]
                        or [-2], dtype=np.int32)
    i = vocab.index(term)
    return np.array([-2 if i is None else i], dtype=np.int32)


def search(world: World, q: Query, *, limit: int, offset: int = 0, before: int | None = None,
           after: int | None = None, default_status: str = "any", md5_of=None) -> list:
    """Run a query: `limit` posts after skipping `offset`, or keyset pages below `before` /
    above `after` (ascending ids, as the sites' `a<id>` pages fetch them).

    `md5_of(post)` resolves `md5:` searches. Orders other than by id sort the whole result.
    """
    match = compile_filter(q, world, default_status)
    if q.md5:
        posts = (p for p in world.scan(match) if md5_of is not None and md5_of(p) == q.md5)
    elif before is not None or after is not None:
        posts = world.scan(match, descending=after is None, start_id=before or after)
    elif q.order in {None, "id", "id_asc", "id_desc"}:
        posts, offset = world.scan(match, descending=not q.ascending, skip=offset), 0
    else:
        posts = _sorted(world, match, q.order)
    out = []
    for i, post in enumerate(posts):
        if i >= offset:
            out.append(post)
        if len(out) >= limit:
            break
    return out


def _sorted(world: World, match, order: str):
    key, _, direction = order.partition("_")
    column = {"score": "score", "favcount": "fav", "mpixels": "width"}.get(key, "score")
    rows = []
    for b in range(world.n_blocks):
        blk = world.block(b)
        hits = np.flatnonzero(match(blk))
        rows += zip(blk.cols[column][hits].tolist(), blk.ids[hits].tolist(), strict=True)
    rows.sort(reverse=direction != "asc")
    for _, pid in rows:
        yield world.post(pid)
