"""The emulator's synthetic world: posts generated on demand, deterministic from a seed.

Posts live in blocks of BLOCK posts. A block is generated in one vectorised step from
`(seed, block number)` and kept in a small LRU cache, so a world of a million posts is served
without ever building all of it. Every site prefix of the emulator views the same world
(same ids, same files), each through its own API dialect.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from . import vocab as V

BLOCK = 1024            # posts per block
ID_SPAN = 1100          # ids per block: ~7% of ids are gaps (expunged posts)
MAX_TAGS = 80           # padded width of a block's tag matrix
EPOCH_START = datetime(2007, 1, 1, tzinfo=UTC).timestamp()
EPOCH_END = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
RATINGS = np.array(["g", "s", "q", "e"])
EXTS = np.array(["jpg", "png", "gif", "webp", "mp4", "webm", "zip", "swf"])
EXT_P = [0.68, 0.27, 0.012, 0.01, 0.015, 0.005, 0.005, 0.003]
IMAGE_EXTS = {"jpg", "png", "gif", "webp"}
CHILD_P = 0.08          # share of posts that are children of an earlier post of their block
REUPLOAD_P = 0.5        # share of children that re-upload the parent's picture
REUPLOADS = ("", "resized", "edited")   # edited: the parent's picture with a small note on it


@dataclass
class Post:
    """One post of the world, in the emulator's own neutral form (sites render it)."""

    id: int
    created_at: float           # unix seconds, UTC
    rating: str                 # g / s / q / e
    score: int
    up_score: int
    down_score: int
    fav_count: int
    width: int
    height: int
    file_ext: str
    rgba: bool
    mislabeled: bool            # the file's bytes are PNG behind a .jpg name, or the reverse
    is_deleted: bool
    is_banned: bool
    is_pending: bool
    is_flagged: bool
    restricted: bool            # "gold-only": hidden from anonymous Danbooru users
    parent_id: int | None
    has_children: bool
    uploader_id: int
    source: str
    tags: dict[int, list[str]] = field(default_factory=dict)   # category -> names
    reupload: str = ""          # "" | resized | edited: the parent's picture (see _families)

    @property
    def tag_list(self) -> list[str]:
        return sorted(t for names in self.tags.values() for t in names)

    @property
    def created(self) -> datetime:
        return datetime.fromtimestamp(self.created_at, UTC)

    @property
    def status(self) -> str:
        if self.is_deleted:
            return "deleted"
        if self.is_flagged:
            return "flagged"
        return "pending" if self.is_pending else "active"

    @property
    def has_sample(self) -> bool:
        """Danbooru's rule: a sample exists for static images wider than 850 px, and ugoira."""
        return (self.file_ext in {"jpg", "png", "webp"} and self.width > 850) \
            or self.file_ext == "zip"


@dataclass
class Block:
    ids: np.ndarray
    cols: dict[str, np.ndarray]
    tags: np.ndarray            # (n, MAX_TAGS) vocabulary indices, -1 padded


class World:
    """A deterministic booru: `World(seed, n_posts)`; query with `scan()`, fetch with `post()`."""

    def __init__(self, seed: int = 0, n_posts: int = 3000, image_scale: float = 1.0,
                 cache_blocks: int = 256):
        if n_posts < 0:
            raise ValueError("n_posts must be >= 0")
        self.seed = seed
        self.n_posts = n_posts
        self.image_scale = image_scale
        self.vocab = V.build_vocabulary(seed)
        self.n_blocks = -(-n_posts // BLOCK)
        self._cache: OrderedDict[int, Block] = OrderedDict()
        self._cache_blocks = cache_blocks
        self._lock = threading.Lock()
        self._tag_counts: np.ndarray | None = None
        cats = self.vocab.categories
        self._general = np.flatnonzero((cats == V.GENERAL) & (self.vocab.weights > 0))
        self._characters = self.vocab.of_category(V.CHARACTER)
        self._copyrights = self.vocab.of_category(V.COPYRIGHT)
        self._artists = self.vocab.of_category(V.ARTIST)
        self._visual = np.array([self.vocab.by_name[t] for t in V.VISUAL_TAGS])
        self._meta = {n: self.vocab.by_name[n] for n in V.SIZE_META + V.RANDOM_META}

    # -- blocks ---------------------------------------------------------------------------
    def block(self, b: int) -> Block:
        with self._lock:
            blk = self._cache.get(b)
            if blk is not None:
                self._cache.move_to_end(b)
                return blk
        blk = self._generate_block(b)
        with self._lock:
            self._cache[b] = blk
            while len(self._cache) > self._cache_blocks:
                self._cache.popitem(last=False)
        return blk

    def _generate_block(self, b: int) -> Block:
        rng = np.random.default_rng([self.seed, 2, b])
        n = min(BLOCK, self.n_posts - b * BLOCK)
        ids = np.sort(rng.choice(ID_SPAN, size=BLOCK, replace=False))[:n] + b * ID_SPAN + 1
        frac = ids / max(self.n_blocks * ID_SPAN, 1)
        created = EPOCH_START + frac * (EPOCH_END - EPOCH_START) + rng.uniform(0, 3600, n)
        long_side = np.clip(rng.lognormal(np.log(1600), 0.45, n), 300, 6000)
        aspect = rng.choice([1.0, 0.75, 4 / 3, 9 / 16, 16 / 9, 2 / 3, 1.5, 0.707], n)
        width = np.where(aspect >= 1, long_side, long_side * aspect)
        height = np.where(aspect >= 1, long_side / aspect, long_side)
        scale = self.image_scale
        ext = rng.choice(len(EXTS), n, p=EXT_P)
        up = rng.geometric(0.08, n) - 1
        down = -(rng.geometric(0.6, n) - 1)
        parent = np.where(rng.random(n) < 0.05, ids - rng.integers(1, 500, n), 0)
        cols = {
            "created_at": created,
            "rating": rng.choice(4, n, p=[0.5, 0.28, 0.13, 0.09]),
            "up": up, "down": down, "score": up + down,
            "fav": (up * rng.uniform(1, 4, n)).astype(np.int64),
            "width": np.maximum(32, np.round(width * scale)).astype(np.int64),
            "height": np.maximum(32, np.round(height * scale)).astype(np.int64),
            "real_width": np.round(width).astype(np.int64),
            "ext": ext,
            "rgba": (EXTS[ext] == "png") & (rng.random(n) < 0.3),
            "mislabeled": np.isin(EXTS[ext], ["jpg", "png"]) & (rng.random(n) < 0.01),
            "deleted": rng.random(n) < 0.03,
            "banned": rng.random(n) < 0.005,
            "pending": rng.random(n) < 0.01,
            "flagged": rng.random(n) < 0.005,
            "restricted": rng.random(n) < 0.01,
            "parent": np.where(parent > 0, parent, 0),
            "children": rng.random(n) < 0.04,
            "uploader": rng.integers(1, 600_000, n),
            "source": rng.integers(0, 4, n),
            "source_id": rng.integers(10_000_000, 130_000_000, n),
        }
        tags = self._block_tags(rng, n, cols)
        _families(np.random.default_rng([self.seed, 5, b]), ids, cols, tags)
        return Block(ids=ids, cols=cols, tags=tags)

    def _block_tags(self, rng: np.random.Generator, n: int, cols: dict) -> np.ndarray:
        w = self.vocab.weights
        out = np.full((n, MAX_TAGS), -1, dtype=np.int32)
        # General tags: Zipf draws, duplicates removed, about 18 per post.
        draws = rng.choice(self._general, size=(n, 40), p=w[self._general])
        draws.sort(axis=1)
        dup = np.zeros_like(draws, dtype=bool)
        dup[:, 1:] = draws[:, 1:] == draws[:, :-1]
        keys = np.where(dup, np.inf, rng.random(draws.shape))
        k = np.clip(rng.poisson(18, n), 3, 40)
        order = np.argsort(keys, axis=1)
        picked = np.take_along_axis(draws, order, axis=1)
        keep = (np.arange(40)[None, :] < k[:, None]) & ~np.take_along_axis(dup, order, axis=1)
        out[:, :40] = np.where(keep, picked, -1)
        # Visual tags: background colour, pattern, shape kinds, object count, extras.
        vis = self._visual_tags(rng, n)
        out[:, 40:47] = vis
        # Characters, their copyrights, artists, meta.
        n_char = rng.choice(3, n, p=[0.35, 0.5, 0.15])
        chars = rng.choice(self._characters, size=(n, 2), p=w[self._characters])
        chars[:, 1] = np.where(chars[:, 1] == chars[:, 0], -1, chars[:, 1])
        chars = np.where(np.arange(2)[None, :] < n_char[:, None], chars, -1)
        out[:, 47:49] = chars
        parents = np.where(chars >= 0, self.vocab.copyright_of[np.maximum(chars, 0)], -1)
        parents[:, 1] = np.where(parents[:, 1] == parents[:, 0], -1, parents[:, 1])
        out[:, 49:51] = parents
        extra_copy = rng.choice(self._copyrights, n, p=w[self._copyrights])
        out[:, 51] = np.where((n_char == 0) & (rng.random(n) < 0.6), extra_copy, -1)
        n_art = rng.choice(3, n, p=[0.07, 0.9, 0.03])
        arts = rng.choice(self._artists, size=(n, 2), p=w[self._artists])
        arts[:, 1] = np.where(arts[:, 1] == arts[:, 0], -1, arts[:, 1])
        out[:, 52:54] = np.where(np.arange(2)[None, :] < n_art[:, None], arts, -1)
        rw, h = cols["real_width"], cols["height"] / self.image_scale
        pixels = rw * h
        out[:, 54] = np.where(pixels >= 3200 * 2400, self._meta["absurdres"], -1)
        out[:, 55] = np.where(pixels >= 1600 * 1200, self._meta["highres"], -1)
        out[:, 56] = np.where(pixels <= 500 * 500, self._meta["lowres"], -1)
        random_meta = np.array([self._meta[m] for m in V.RANDOM_META])
        mp = 0.35 / np.arange(1, len(random_meta) + 1) ** 0.8
        hits = rng.random((n, len(random_meta))) < mp[None, :]
        out[:, 57:57 + len(random_meta)] = np.where(hits, random_meta[None, :], -1)
        return out

    def _visual_tags(self, rng: np.random.Generator, n: int) -> np.ndarray:
        base = {name: i for i, name in enumerate(V.VISUAL_TAGS)}
        vis = np.full((n, 7), -1, dtype=np.int32)
        vis[:, 0] = rng.integers(0, len(V.BACKGROUND_COLOURS), n)
        pattern = rng.integers(0, len(V.BACKGROUND_PATTERNS) * 2, n)
        vis[:, 1] = np.where(pattern < len(V.BACKGROUND_PATTERNS),
                             base[V.BACKGROUND_PATTERNS[0]] + pattern, -1)
        kinds = np.argsort(rng.random((n, len(V.SHAPES))), axis=1)[:, :3] + base[V.SHAPES[0]]
        n_kinds = rng.choice([1, 2, 3], n, p=[0.5, 0.35, 0.15])
        vis[:, 2:5] = np.where(np.arange(3)[None, :] < n_kinds[:, None], kinds, -1)
        # Object count (the renderer draws exactly this many shapes).
        count = rng.choice([1, 2, 3, 4, 5, 6, 7, 8], n, p=[.3, .25, .12, .08, .08, .07, .05, .05])
        count = np.maximum(count, n_kinds)
        tag = np.select([count == 1, count == 2, count >= 5],
                        [base["single_object"], base["two_objects"], base["many_objects"]], -1)
        vis[:, 5] = tag
        extra = rng.random(n)
        vis[:, 6] = np.select([extra < 0.15, extra < 0.25], [base["border"], base["monochrome"]],
                              -1)
        # Map renderer indices to vocabulary indices (visual tags come first in the vocabulary).
        return np.where(vis >= 0, self._visual[np.maximum(vis, 0)], -1)

    def object_count(self, post: Post) -> int:
        """The number of shapes the renderer draws for a post (a pure function of the post)."""
        rng = np.random.default_rng([self.seed, 3, post.id])
        tags = set(post.tags[V.GENERAL])
        kinds = sum(s in tags for s in V.SHAPES)
        if "single_object" in tags:
            return 1
        if "two_objects" in tags:
            return 2
        if "many_objects" in tags:
            return int(rng.integers(5, 9))
        return max(kinds, int(rng.integers(3, 5)))

    # -- lookup ---------------------------------------------------------------------------
    @property
    def max_id(self) -> int:
        if self.n_posts == 0:
            return 0
        return int(self.block(self.n_blocks - 1).ids[-1])

    def locate(self, post_id: int) -> tuple[Block, int] | None:
        b = (post_id - 1) // ID_SPAN
        if post_id < 1 or b >= self.n_blocks:
            return None
        blk = self.block(b)
        i = int(np.searchsorted(blk.ids, post_id))
        if i < len(blk.ids) and blk.ids[i] == post_id:
            return blk, i
        return None

    def post(self, post_id: int) -> Post | None:
        """The post with this id, or None when the id is a gap or out of range."""
        found = self.locate(post_id)
        return None if found is None else self._post(*found)

    def _post(self, blk: Block, i: int) -> Post:
        c = {k: v[i] for k, v in blk.cols.items()}
        pid = int(blk.ids[i])
        tags: dict[int, list[str]] = {cat: [] for cat in V.CATEGORY_NAMES}
        for t in blk.tags[i][blk.tags[i] >= 0]:
            tags[int(self.vocab.categories[t])].append(self.vocab.names[t])
        source = ["", f"https://www.pixiv.net/artworks/{c['source_id']}",
                  f"https://twitter.com/i/web/status/{c['source_id']}00000000",
                  f"https://i.pximg.net/img-original/img/2019/{c['source_id']}_p0.png"]
        return Post(
            id=pid, created_at=float(c["created_at"]), rating=str(RATINGS[c["rating"]]),
            score=int(c["score"]), up_score=int(c["up"]), down_score=int(c["down"]),
            fav_count=int(c["fav"]), width=int(c["width"]), height=int(c["height"]),
            file_ext=str(EXTS[c["ext"]]), rgba=bool(c["rgba"]),
            mislabeled=bool(c["mislabeled"]), is_deleted=bool(c["deleted"]),
            is_banned=bool(c["banned"]), is_pending=bool(c["pending"]),
            is_flagged=bool(c["flagged"]), restricted=bool(c["restricted"]),
            parent_id=int(c["parent"]) or None, has_children=bool(c["children"]),
            uploader_id=int(c["uploader"]), source=source[int(c["source"])],
            tags={k: sorted(v) for k, v in tags.items()}, reupload=REUPLOADS[int(c["reupload"])],
        )

    def picture_of(self, post: Post) -> Post:
        """The post whose picture a re-upload shows (its parent's, up the chain), else itself."""
        while post.reupload and post.parent_id:
            parent = self.post(post.parent_id)
            if parent is None:
                break
            post = parent
        return post

    # -- search ---------------------------------------------------------------------------
    def scan(self, match, descending: bool = True, start_id: int | None = None,
             skip: int = 0):
        """Yield posts for which `match(block) -> bool mask` holds, in id order.

        `start_id` bounds the scan: ids strictly below it (descending) or above it (ascending).
        `skip` matches are passed over first, whole blocks at a time, without building them.
        """
        blocks = range(self.n_blocks - 1, -1, -1) if descending else range(self.n_blocks)
        if start_id is not None:
            first = min(max((start_id - 1) // ID_SPAN, 0), max(self.n_blocks - 1, 0))
            blocks = range(first, -1, -1) if descending else range(first, self.n_blocks)
        for b in blocks:
            blk = self.block(b)
            mask = match(blk)
            if start_id is not None:
                mask = mask & ((blk.ids < start_id) if descending else (blk.ids > start_id))
            hits = np.flatnonzero(mask)
            if skip >= len(hits):
                skip -= len(hits)
                continue
            hits = hits[::-1] if descending else hits
            hits, skip = hits[skip:], 0
            for i in hits:
                yield self._post(blk, int(i))

    def tag_counts(self) -> np.ndarray:
        """Exact post count of every tag (one full scan, then cached)."""
        if self._tag_counts is None:
            counts = np.zeros(len(self.vocab.names) + 1, dtype=np.int64)
            for b in range(self.n_blocks):
                counts += np.bincount(self.block(b).tags.ravel() + 1, minlength=len(counts))
            self._tag_counts = counts[1:]
        return self._tag_counts

    def tag_id(self, name: str) -> int | None:
        """A tag's public id (vocabulary index + 1), or None for an unknown name."""
        i = self.vocab.index(name)
        return None if i is None else i + 1

    def visual_tags(self) -> list[str]:
        return list(V.VISUAL_TAGS)


def _families(rng: np.random.Generator, ids: np.ndarray, cols: dict, tags: np.ndarray) -> None:
    """Parents and children within a block; some children re-upload the parent's picture.

    A child's parent is an earlier post of the same block, so a block alone says who has
    children. A re-upload copies its parent's tags and shows its picture: ``resized`` at
    50-85% of the parent's size as a JPEG, ``edited`` at the same size with a small note drawn
    on it (files.py). Every change is in place on ``cols`` and ``tags``.
    """
    n = len(ids)
    is_child = (rng.random(n) < CHILD_P) & (np.arange(n) > 0)
    back = rng.integers(1, 60, n)
    kind = np.where(rng.random(n) < REUPLOAD_P, rng.integers(1, 3, n), 0)
    factor = rng.uniform(0.5, 0.85, n)
    parent_row = np.where(is_child, np.maximum(np.arange(n) - back, 0), -1)
    cols["parent"] = np.where(is_child, ids[np.maximum(parent_row, 0)], 0)
    cols["children"] = np.bincount(parent_row[is_child], minlength=n) > 0
    cols["reupload"] = np.zeros(n, dtype=np.int64)
    image_exts = np.flatnonzero(np.isin(EXTS, ["jpg", "png"]))
    for i in np.flatnonzero(is_child & (kind > 0)):     # in id order: chains copy finished rows
        p = parent_row[i]
        if EXTS[cols["ext"][p]] not in IMAGE_EXTS or cols["deleted"][p]:
            continue
        cols["reupload"][i] = kind[i]
        tags[i] = tags[p]
        scale = factor[i] if kind[i] == 1 else 1.0
        for name in ("width", "height", "real_width"):
            cols[name][i] = max(32, round(cols[name][p] * scale))
        cols["ext"][i] = image_exts[0] if kind[i] == 1 else cols["ext"][p]
        cols["rgba"][i] = cols["rgba"][p] and kind[i] == 2
        cols["mislabeled"][i] = False
