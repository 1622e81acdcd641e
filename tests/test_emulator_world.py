"""The synthetic world: deterministic, long-tailed, lazily generated, and its images show
its visual tags."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from scrape.emulator import vocab as V
from scrape.emulator.files import FileStore
from scrape.emulator.world import BLOCK, World


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = World(seed=3, n_posts=300), World(seed=3, n_posts=300), World(seed=4, n_posts=300)
    ids = [p.id for p in a.scan(lambda blk: np.ones(len(blk.ids), bool))][:50]
    assert [a.post(i) for i in ids] == [b.post(i) for i in ids]
    assert [a.post(i).tags for i in ids[:20]] != [c.post(i).tags if c.post(i) else None
                                                  for i in ids[:20]]


def test_vocabulary_is_large_long_tailed_and_has_every_category():
    world = World(seed=0, n_posts=5000)
    cats = world.vocab.categories
    assert len(world.vocab.names) > 5000
    for cat in (V.GENERAL, V.ARTIST, V.COPYRIGHT, V.CHARACTER, V.META):
        assert (cats == cat).sum() >= 20
    counts = np.sort(world.tag_counts()[cats == V.GENERAL])[::-1]
    used = counts[counts > 0]
    # Long tail: the top 1% of tags hold far more occurrences than the bottom half.
    assert used[: len(used) // 100].sum() > 5 * used[len(used) // 2:].sum()
    assert len(set(world.vocab.names)) == len(world.vocab.names)


def test_a_million_posts_are_served_without_building_them_all():
    world = World(seed=1, n_posts=1_000_000)
    assert world.max_id > 1_000_000
    last = world.post(world.max_id)
    assert last is not None and last.id == world.max_id
    assert len(world._cache) <= 2          # only the blocks touched were generated
    assert world.n_blocks == -(-1_000_000 // BLOCK)


def test_posts_have_realistic_fields():
    world = World(seed=2, n_posts=3000)
    posts = [p for p in world.scan(lambda blk: np.ones(len(blk.ids), bool))]
    assert len(posts) == 3000
    assert {p.rating for p in posts} == {"g", "s", "q", "e"}
    assert {"jpg", "png"} <= {p.file_ext for p in posts}
    assert any(p.rgba for p in posts) and any(p.is_deleted for p in posts)
    assert any(p.parent_id for p in posts) and any(p.is_banned for p in posts)
    sides = [max(p.width, p.height) for p in posts]
    assert min(sides) >= 300 and max(sides) >= 3000
    for p in posts[:200]:
        visual = [t for t in p.tags[V.GENERAL] if t in V.VISUAL_TAGS]
        assert sum(t in V.BACKGROUND_COLOURS for t in visual) == 1
        assert 1 <= sum(t in V.SHAPES for t in visual) <= 3
        # A character's copyright comes with it.
        for ch in p.tags[V.CHARACTER]:
            parent = world.vocab.copyright_of[world.vocab.index(ch)]
            assert world.vocab.names[parent] in p.tags[V.COPYRIGHT]


def _colour_share(im: Image.Image, rgb) -> float:
    a = np.asarray(im.convert("RGB"), dtype=np.int16)
    return float((np.abs(a - np.array(rgb)).sum(axis=2) < 40).mean())


def test_images_show_the_visual_tags():
    world = World(seed=5, n_posts=400, image_scale=0.25)
    store = FileStore(world)
    checked = 0
    for post in world.scan(lambda blk: np.ones(len(blk.ids), bool)):
        general = set(post.tags[V.GENERAL])
        if post.file_ext not in {"jpg", "png"} or "monochrome" in general or post.mislabeled:
            continue
        im = Image.open(io.BytesIO(store.get(post, "original")))
        assert im.size == (post.width, post.height)
        bg = next(t for t in V.BACKGROUND_COLOURS if t in general)
        corner = np.asarray(im.convert("RGB"))[post.height // 2, 1 if "border" not in general
                                                 else post.width // 4]
        share = _colour_share(im, V.BACKGROUND_COLOURS[bg])
        if not any(t in general for t in V.BACKGROUND_PATTERNS):
            assert share > 0.4, (post.id, bg, share, corner)
        checked += 1
        if checked == 25:
            break
    assert checked == 25


def test_same_post_same_bytes_so_md5_is_stable():
    world = World(seed=6, n_posts=50, image_scale=0.2)
    a, b = FileStore(world), FileStore(World(seed=6, n_posts=50, image_scale=0.2))
    for post in list(world.scan(lambda blk: np.ones(len(blk.ids), bool)))[:8]:
        assert a.md5(post) == b.md5(post)
        assert a.get(post, "original") == b.get(post, "original")
