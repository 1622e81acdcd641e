"""pHash against imagehash, the first pass (its cache), multi-index near pairs against all
pairs, components, families."""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

from prep.curation import _near_duplicates
from prep.groups import components, group_posts, near_pairs, popcount
from prep.image_pool import ImagePool, process_item
from prep.imaging import ImageSettings, process_file
from prep.make_shards.first_pass import FirstPassCache, cache_item, hash_item
from prep.phash import from_hex, phash_image


def test_phash_is_imagehash_phash():
    rng = np.random.default_rng(0)
    for k in range(40):
        pixels = rng.integers(0, 256, (int(rng.integers(16, 90)), int(rng.integers(16, 90)), 3))
        if k % 2:  # smooth pictures, closer to real ones than noise
            pixels = np.cumsum(pixels, axis=1) // (np.arange(pixels.shape[1])[None, :, None] + 1)
        im = Image.fromarray(pixels.astype(np.uint8))
        assert phash_image(im) == str(imagehash.phash(im))


def test_first_pass_hash_survives_resizing_and_reports_bad_files(tmp_path):
    rng = np.random.default_rng(1)
    base = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((24, 24, 1))).astype(np.uint8)
    big = Image.fromarray(base)
    big.save(tmp_path / "big.jpg", quality=92)
    big.resize((120, 120), Image.Resampling.BICUBIC).save(tmp_path / "small.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    settings = ImageSettings(size=64)
    (_, _, a), (_, _, b) = (cache_item((str(tmp_path / n), n), settings)
                            for n in ("big.jpg", "small.png"))
    assert (a.found.width, a.found.height, b.found.width, b.found.height) == (192, 192, 120, 120)
    values, valid = from_hex([a.found.phash, b.found.phash, str(imagehash.phash(big))])
    assert valid.all() and popcount(values[:1] ^ values[1:2])[0] <= 2
    assert popcount(values[:1] ^ values[2:])[0] <= 4  # imagehash of the full picture
    assert a.encoded == process_file(tmp_path / "big.jpg", settings)  # the shard's bytes
    assert hash_item((str(tmp_path / "big.jpg"), ""), settings)[2].found == a.found
    for name in ("bad.jpg", "missing.jpg"):
        status, message, bad = cache_item((str(tmp_path / name), name), settings)
        assert (status, message) == process_item((str(tmp_path / name), name), settings)[:2]
        assert status == ("failed_unsupported" if name == "bad.jpg" else "failed_missing")
        if name == "bad.jpg":  # a broken file is cached as such, a missing one is not
            assert bad.status == status and bad.found.phash is None and bad.found.error
        else:
            assert bad is None


def test_first_pass_cache_is_reused_and_serves_the_shard_images(tmp_path):
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"broken")
    settings = ImageSettings(size=32)
    paths = [str(tmp_path / "a.png"), None, str(tmp_path / "b.png")]
    first = FirstPassCache(tmp_path / "cache", settings).run(paths)
    assert first[0].width == 40 and first[1].phash is None and first[2].phash is None
    parts = sorted((tmp_path / "cache").rglob("part-*"))
    assert sorted(p.name.split(".", 1)[1] for p in parts) == ["feather", "images.feather"]
    cache = FirstPassCache(tmp_path / "cache", settings)
    killed = cache.directory / ".part-0123abcd.images.feather.tmp"  # a kill -9 mid-write
    killed.write_bytes(b"half an arrow file")
    assert cache.run(paths) == first
    assert not killed.exists()
    assert sorted((tmp_path / "cache").rglob("part-*")) == parts  # nothing new prepared
    items = [(p, p or "x") for p in paths + [str(tmp_path / "c.png")]]
    with ImagePool(settings) as pool:
        expected = list(pool.map(items))
        assert list(cache.results(items, pool)) == expected
        assert cache.has(paths[0]) and cache.has(paths[2]) and not cache.has(None)
        cache.drop_images()
        assert not cache.has(paths[0]) and cache.has(paths[2])  # failures need no bytes
        assert list(cache.results(items, pool)) == expected
    other = FirstPassCache(tmp_path / "cache", ImageSettings(size=48))
    assert other.run(paths)[0].width == 40
    assert len(list((tmp_path / "cache").iterdir())) == 2
    other.forget_others()
    assert list((tmp_path / "cache").iterdir()) == [other.directory]


def _hashes(rng, n: int) -> np.ndarray:
    """Random hashes, a quarter of them near copies (1-3 bits flipped) of others."""
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    copies = rng.choice(n, n // 4, replace=False)
    flips = np.zeros(len(copies), np.uint64)
    bits = rng.integers(1, 4, len(copies))
    for k in range(3):
        bit = np.uint64(1) << rng.integers(0, 64, len(copies)).astype(np.uint64)
        flips |= np.where(k < bits, bit, np.uint64(0))
    hashes[copies] = hashes[rng.integers(0, n, len(copies))] ^ flips
    return hashes


def _all_pairs(hashes: np.ndarray, distance: int) -> tuple[np.ndarray, np.ndarray]:
    ii, jj = np.triu_indices(len(hashes), 1)
    close = popcount(hashes[ii] ^ hashes[jj]) <= distance
    return ii[close], jj[close]


def test_near_pairs_equal_all_pairs():
    rng = np.random.default_rng(2)
    for n, distance in ((400, 4), (400, 8), (300, 1), (50, 12)):
        hashes = np.unique(_hashes(rng, n))
        i, j = near_pairs(hashes, distance)
        ii, jj = _all_pairs(hashes, distance)
        assert len(ii) > 0
        assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == sorted(
            zip(ii.tolist(), jj.tolist(), strict=True))


def test_identical_hashes_join_the_same_components():
    rng = np.random.default_rng(3)
    hashes = _hashes(rng, 300)
    hashes[:20] = hashes[20]  # 21 copies: paired with their first occurrence, not all pairs
    hashes[40:45] = hashes[50] ^ np.uint64(1)
    for distance in (0, 3):
        i, j = near_pairs(hashes, distance)
        assert (popcount(hashes[i] ^ hashes[j]) <= distance).all() and (i < j).all()
        assert components(300, i, j).tolist() == components(
            300, *_all_pairs(hashes, distance)).tolist()


def test_components():
    labels = components(7, np.array([0, 2, 4, 5]), np.array([1, 3, 2, 6]))
    assert labels.tolist() == [0, 0, 2, 2, 2, 5, 5]


def test_groups_join_families_and_near_duplicates():
    # rows sorted by (site code, id): site 0 ids 1,2,3,7,8 and site 1 id 2
    codes = np.array([0, 0, 0, 0, 0, 1])
    ids = np.array([1, 2, 3, 7, 8, 2])
    parents = np.array([0, 1, 0, 5, 5, 0])  # 2 is 1's child; 7 and 8 share a missing parent 5
    hashes = np.array([0, 0xFFFF << 40, 0xFFFF, 0xFFFF << 20, 0xFFFF << 48, 0xFFFE],
                      dtype=np.uint64)
    valid = np.array([True, True, True, True, True, True])
    grouping = group_posts(codes, ids, parents, hashes, valid, max_distance=1)
    # 3 and the other site's 2 are one bit apart; 7 and 8 are siblings
    assert grouping.anchor.tolist() == [0, 0, 2, 3, 3, 2]
    assert grouping.near.tolist() == [0, 1, 2, 3, 4, 2]
    assert grouping.summary["families"] == 2
    assert grouping.summary["near_duplicate_groups"] == 1
    assert grouping.summary["posts_kept_together"] == 6


def test_near_dedupe_keeps_the_largest_then_the_best_scored():
    near = np.array([0, 0, 0, 3, 3, 5])
    area = np.array([100, 400, 400, 10, 10, 1])
    score = np.array([9, 1, 5, 0, 0, 0])
    kept = _near_duplicates(near, area, score, ["d"] * 6, np.arange(1, 7))
    assert kept == ["d_3", "d_3", None, None, "d_4", None]
