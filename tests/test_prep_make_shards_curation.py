"""make-shards curation: families and near-duplicates never straddle the split; --dedupe near;
the filters and their counts; parent_id and has_children from every dialect."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support.shard_builds import documented_split, encode, make_shards, rows_of

import prep.cli
import scrape.cli
from prep.curation import NEAR_DISTANCE
from prep.groups import popcount
from prep.phash import from_hex
from scrape.sites import SITES as ADAPTERS

SITES = list(ADAPTERS)


def _scrape(emulator, raw, site: str, limit: int, *extra: str) -> list[dict]:
    assert scrape.cli.main(["--site", site, "--tags", "", "--out", str(raw), "--base-url",
                            emulator.site(site), "--rate", "0", "-q", "--limit", str(limit),
                            *extra]) == 0
    return pq.read_table(raw / "posts").to_pylist()


@pytest.mark.parametrize("site", SITES)
def test_every_dialect_gives_parent_id_and_has_children(emulator, tmp_path, site):
    posts = _scrape(emulator, tmp_path / "raw", site, 120, "--metadata-only")
    assert len(posts) == 120
    for post in posts:
        truth = emulator.world.post(post["id"])
        assert post["parent_id"] == truth.parent_id, post["id"]
        assert post["has_children"] in (truth.has_children, None)
    assert sum(p["parent_id"] is not None for p in posts) >= 3
    if site != "safebooru":  # safebooru's JSON has parent_id but no has_children
        assert any(p["has_children"] for p in posts)


@pytest.fixture(scope="module")
def scraped(emulator, tmp_path_factory):
    """The 300 newest Danbooru posts of the emulator (with families and re-uploads)."""
    root = tmp_path_factory.mktemp("families")
    raw, tags = root / "raw", root / "tags.csv"
    _scrape(emulator, raw, "danbooru", 300)
    assert prep.cli.main(["make-tag-index", "--posts", str(raw), "--out", str(tags), "-q"]) == 0
    return raw, tags


def _groups(rows: list[dict], posts: dict[int, dict], distance: int) -> list[set[str]]:
    """Families (parent links, shared parents) and pHash clusters of the rows, as key sets."""
    keys = [r["key"] for r in rows]
    parent = {k: k for k in keys}

    def find(k):
        while parent[k] != k:
            k = parent[k]
        return k

    def union(a, b):
        parent[find(a)] = find(b)

    by_parent: dict[int, str] = {}
    for r in rows:
        pid = posts[r["id"]]["parent_id"]
        if pid:
            union(r["key"], by_parent.setdefault(pid, r["key"]))
            if f"danbooru_{pid}" in parent:
                union(r["key"], f"danbooru_{pid}")
    hashes, valid = from_hex([r["phash"] for r in rows])
    for i in np.flatnonzero(valid):
        for j in np.flatnonzero(valid):
            if i < j and popcount(hashes[i:i + 1] ^ hashes[j:j + 1])[0] <= distance:
                union(keys[i], keys[j])
    groups: dict[str, set[str]] = {}
    for k in keys:
        groups.setdefault(find(k), set()).add(k)
    return [g for g in groups.values() if len(g) > 1]


def test_families_and_near_duplicates_never_straddle_the_split(scraped, tmp_path, capsys):
    raw, tags = scraped
    posts = {p["id"]: p for p in pq.read_table(raw / "posts").to_pylist()}
    out = tmp_path / "shards"
    assert make_shards(capsys, "--posts", str(raw), "--tags", str(tags), "--out", str(out),
                       "--val-fraction", "0.5")[0] == 0
    split = {r["key"]: s for s in ("train", "val") for r in rows_of(out, s)}
    rows = rows_of(out)
    groups = _groups(rows, posts, NEAR_DISTANCE)
    families = [g for g in groups if any(posts[int(k.split("_")[1])]["parent_id"] for k in g)]
    reuploads = [(r, posts[r["id"]]["parent_id"]) for r in rows
                 if f"danbooru_{posts[r['id']]['parent_id']}" in split]
    assert len(families) >= 5 and len(reuploads) >= 5
    for group in groups:
        assert len({split[k] for k in group}) == 1, group
    # a split by (site, id) alone would have cut some of these groups
    assert any(len({documented_split("danbooru", int(k.split("_")[1]), 0.5) for k in g}) > 1
               for g in groups)
    manifest = json.loads((out / "manifest.json").read_text())
    grouping = manifest["grouping"]
    assert grouping["posts_kept_together"] == sum(map(len, groups))
    assert grouping["split"] == {s: manifest["splits"][s]["count"] for s in ("train", "val")}
    assert grouping["near_duplicate_groups"] >= 1 and grouping["families"] >= 5
    # a rebuild elsewhere (hashes not cached) gives the same split and the same rows
    again = tmp_path / "again"
    assert make_shards(capsys, "--posts", str(raw), "--tags", str(tags), "--out", str(again),
                       "--val-fraction", "0.5")[0] == 0
    assert {r["key"]: s for s in ("train", "val") for r in rows_of(again, s)} == split
    assert json.loads((again / "manifest.json").read_text())["grouping"] == grouping


def test_dedupe_near_keeps_one_picture_per_group(scraped, tmp_path, capsys):
    raw, tags = scraped
    posts = {p["id"]: p for p in pq.read_table(raw / "posts").to_pylist()}
    out = tmp_path / "shards"
    assert make_shards(capsys, "--posts", str(raw), "--tags", str(tags), "--out", str(out),
                       "--val-fraction", "0.5", "--dedupe", "near")[0] == 0
    rows = {r["key"]: r for r in rows_of(out)}
    skipped = [r for r in rows.values() if r["status"] == "skipped_near_duplicate"]
    assert skipped
    for row in skipped:
        kept = rows[row["duplicate_of"]]
        assert kept["duplicate_of"] is None and kept["status"] != "skipped_near_duplicate"
        big, small = posts[kept["id"]], posts[row["id"]]
        assert big["width"] * big["height"] >= small["width"] * small["height"]
        a, _ = from_hex([row["phash"], kept["phash"]])
        assert popcount(a[:1] ^ a[1:])[0] <= NEAR_DISTANCE * 4  # same cluster (chains allowed)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["selection"]["skipped_near_duplicate"] == len(skipped)
    assert manifest["status"]["skipped_near_duplicate"] == len(skipped)


LIST = pa.list_(pa.string())
SCHEMA = pa.schema([("site", pa.string()), ("id", pa.int64()), ("md5", pa.string()),
                    ("rating", pa.string()), ("score", pa.int64()), ("tags", LIST),
                    ("image_path", pa.string()), ("status", pa.string())])


def test_filters_count_what_they_leave_out(tmp_path, capsys):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "posts").mkdir()
    rng = np.random.default_rng(0)
    sizes = {1: (64, 64), 2: (20, 64), 3: (64, 60), 4: (200, 40), 5: (64, 64), 6: (64, 64),
             7: (64, 64), 8: (48, 48)}
    meta = {1: ("general", 5, ["cat"]), 2: ("general", 5, ["cat"]),  # 2: too small
            3: ("general", 5, ["cat"]), 4: ("general", 5, ["cat"]),  # 4: aspect 5
            5: ("explicit", 5, ["cat"]), 6: ("general", 5, ["cat", "comic"]),
            7: ("general", -2, ["cat"]), 8: ("sensitive", None, ["cat", "monochrome"])}
    records = []
    for post_id, (w, h) in sizes.items():
        noise = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
        picture = Image.fromarray(noise).resize((w, h), Image.Resampling.NEAREST)
        (raw / "images" / f"{post_id}.png").write_bytes(encode(picture, "PNG"))
        rating, score, post_tags = meta[post_id]
        records.append({"site": "danbooru", "id": post_id, "md5": f"m{post_id}",
                        "rating": rating, "score": score, "tags": post_tags,
                        "image_path": f"images/{post_id}.png", "status": "downloaded"})
    pq.write_table(pa.Table.from_pylist(records, schema=SCHEMA), raw / "posts" / "p.parquet")
    tags = tmp_path / "tags.csv"
    tags.write_text("tag_id,name,category,count\n-1,cat,0,8\n")
    out = tmp_path / "out"
    code = prep.cli.main(["make-shards", "--image-size", "32", "--workers", "1", "--posts",
                          str(raw), "--tags", str(tags), "--out", str(out), "--min-side", "32",
                          "--max-aspect", "3", "--exclude-tags", "comic,monochrome",
                          "--ratings", "general,sensitive", "--min-score", "0"])
    summary = capsys.readouterr().out
    assert code == 0
    selection = json.loads((out / "manifest.json").read_text())["selection"]
    assert {k: selection[k] for k in ("filtered_rating", "filtered_tags", "filtered_score",
                                      "filtered_min_side", "filtered_aspect", "selected")} == {
        "filtered_rating": 1, "filtered_tags": 2, "filtered_score": 1,
        "filtered_min_side": 1, "filtered_aspect": 1, "selected": 2}
    assert sorted(r["id"] for r in rows_of(out)) == [1, 3]
    assert "filtered min side 1" in summary and "filtered tags 2" in summary
    assert "groups: 0 families" in summary
    assert prep.cli.main(["make-shards", "--posts", str(raw), "--tags", str(tags), "--out",
                          str(tmp_path / "x"), "--ratings", "safe"]) == 2
