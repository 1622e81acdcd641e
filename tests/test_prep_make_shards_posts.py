"""make-shards from scraped posts: emulator -> scrape -> make-tag-index -> shards, and the
selection rules (downloaded only, duplicates, untagged, unsafe paths, split, order)."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from support.shard_builds import (
    documented_split,
    encode,
    make_shards,
    members,
    rows_of,
)

import prep.cli
import scrape.cli
from prep.split import split_point
from shards import read_shards


@pytest.fixture(scope="module")
def scraped(emulator, tmp_path_factory):
    """60 Danbooru posts scraped from the emulator, and their tag index."""
    root = tmp_path_factory.mktemp("e2e")
    raw, tags = root / "raw", root / "tags.csv"
    assert scrape.cli.main(["--site", "danbooru", "--tags", "", "--out", str(raw), "--base-url",
                            emulator.site("danbooru"), "--rate", "0", "-q", "--limit", "60"]) == 0
    assert prep.cli.main(["make-tag-index", "--posts", str(raw), "--out", str(tags), "-q",
                          "--include-ratings"]) == 0
    return raw, tags


def test_from_the_emulator_to_shards(scraped, tmp_path, capsys):
    raw, tags = scraped
    out = tmp_path / "shards"
    code, err = make_shards(capsys, "--posts", str(raw), "--tags", str(tags), "--out", str(out),
                            "--samples-per-shard", "16", "--val-fraction", "0.2")
    assert code == 0, err
    posts = pq.read_table(raw / "posts").to_pylist()
    index = [line.split(",")[1] for line in tags.read_text().splitlines()[1:]]
    downloaded = {(p["site"], p["id"]): p for p in posts if p["status"] == "downloaded"}
    assert 40 <= len(downloaded) < len(posts)
    rows = {split: rows_of(out, split) for split in ("train", "val")}
    assert all(rows.values())
    for split, split_rows in rows.items():
        assert [(r["site"], r["id"]) for r in split_rows] == sorted(
            (r["site"], r["id"]) for r in split_rows)
        for row in split_rows:
            post = downloaded.pop((row["site"], row["id"]))
            if not post["parent_id"] and not post["has_children"]:  # else: its family's
                assert documented_split(row["site"], row["id"], 0.2) == split
            assert row["key"] == f"danbooru_{row['id']}" and row["md5"] == post["md5"]
            assert row["tags"] == post["tags"] and row["rating"] == post["rating"]
            expected = [t for t in index if t in post["tags"] or t == post["rating"]]
            assert row["labels"] == expected
            assert row["label_ids"] == [index.index(t) for t in expected]
            assert row["labels"][0] == post["rating"]  # --include-ratings: rows 0-3
            assert row["status"] == ("skipped_animated" if post["file_ext"] == "gif"
                                     else "success"), row
    assert downloaded == {}  # every downloaded post became exactly one row
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["selection"]["posts_read"] == len(posts)
    assert manifest["selection"]["not_downloaded"] == len(posts) - sum(map(len, rows.values()))
    assert [s["name"] for s in manifest["splits"]["train"]["shards"]] == [
        f"{i:05d}" for i in range(-(-len(rows["train"]) // 16))]
    # the JSON member of each sample says what its parquet row says
    first = {r["key"]: r for r in rows["train"][:16]}
    for name, data in members(out / "train" / "00000.tar"):
        if name.endswith(".json"):
            meta = json.loads(data)
            row = first[meta["key"]]
            assert {k: row[k] for k in meta} == meta
    decoded = next(read_shards(out, "val"))
    assert decoded["image"].shape == (64, 64, 3)


LIST = pa.list_(pa.string())
SCHEMA = pa.schema([("site", pa.string()), ("id", pa.int64()), ("md5", pa.string()),
                    ("rating", pa.string()), ("tags", LIST), ("image_path", pa.string()),
                    ("status", pa.string())])


def write_raw(raw, parts: list[list[tuple]]) -> None:
    (raw / "posts").mkdir(parents=True)
    for number, rows in enumerate(parts):
        records = [dict(zip(SCHEMA.names, row, strict=True)) for row in rows]
        pq.write_table(pa.Table.from_pylist(records, schema=SCHEMA),
                       raw / "posts" / f"part-{number}.parquet")


def test_selection_rules(tmp_path, capsys):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    for name, colour in (("a", (255, 0, 0)), ("b", (0, 255, 0)), ("c", (0, 0, 255))):
        (raw / "images" / f"{name}.png").write_bytes(encode(Image.new("RGB", (20, 20), colour),
                                                            "PNG"))
    write_raw(raw, [
        [("gelbooru", 5, "m5", "general", ["cat"], "images/a.png", "downloaded"),
         ("danbooru", 9, "m9", "general", ["cat", "dog"], "images/b.png", "downloaded"),
         ("danbooru", 3, "m3", "general", ["tree"], "images/c.png", "downloaded"),  # untagged
         ("danbooru", 4, "m4", "general", ["cat"], None, "skipped_deleted"),
         ("danbooru", 7, "m9", "general", ["cat"], "images/b.png", "downloaded"),  # same md5
         ("danbooru", 8, "m8", "general", ["dog"], "../../etc/passwd", "downloaded")],
        [("danbooru", 9, "m9", "general", ["cat", "dog"], "images/b.png", "downloaded"),
         ("danbooru", 10, "m10", "explicit", ["dog"], "images/missing.png", "downloaded")],
    ])
    tags = tmp_path / "tags.csv"
    tags.write_text("tag_id,name,category,count\n-1,cat,0,3\n-1,dog,0,2\n")
    out = tmp_path / "out"
    code, err = make_shards(capsys, "--posts", str(raw), "--tags", str(tags), "--out", str(out),
                            "--val-fraction", "0")
    assert code == 0, err
    rows = rows_of(out)
    # sorted by (site, id); danbooru 7 keeps md5 m9 (it sorts before danbooru 9)
    assert [(r["key"], r["status"]) for r in rows] == [
        ("danbooru_7", "success"), ("danbooru_8", "failed_bad_path"),
        ("danbooru_10", "failed_missing"), ("gelbooru_5", "success")]
    selection = json.loads((out / "manifest.json").read_text())["selection"]
    assert selection == {"posts_read": 8, "not_downloaded": 1, "duplicate_post": 1,
                         "duplicate_md5": 1, "untagged": 1, "selected": 4, "train": 4, "val": 0}
    assert "not a relative path" in rows[1]["error_message"]
    code, err = make_shards(capsys, "--posts", str(raw), "--tags", str(tags), "--out",
                            str(tmp_path / "all"), "--val-fraction", "0", "--keep-untagged")
    assert code == 0, err
    kept = {r["key"]: r["labels"] for r in rows_of(tmp_path / "all")}
    assert kept["danbooru_3"] == [] and len(kept) == 5


def test_posts_usage_errors(tmp_path, capsys):
    code, err = make_shards(capsys, "--posts", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "--posts needs --tags" in err
    tags = tmp_path / "tags.csv"
    tags.write_text("name,count\ncat,1\n")
    code, err = make_shards(capsys, "--posts", str(tmp_path), "--tags", str(tags), "--out",
                            str(tmp_path / "o"))
    assert code == 2 and "not a tag index" in err
    code, err = make_shards(capsys, "--folder", str(tmp_path), "--out", str(tmp_path / "o"),
                            "--val-fraction", "1.5")
    assert code == 2 and "must be in [0, 1)" in err


def test_split_point_is_the_hash_the_manifest_documents():
    assert split_point("danbooru", 123) == split_point("danbooru", 123)
    assert split_point("danbooru", 123) != split_point("gelbooru", 123)
    points = [split_point("danbooru", i) for i in range(20_000)]
    assert all(0 <= p < 1 for p in points)
    for fraction in (0.02, 0.1):
        ours = ["val" if p < fraction else "train" for p in points]
        assert ours == [documented_split("danbooru", i, fraction) for i in range(20_000)]
    share = Counter("val" if p < 0.02 else "train" for p in points)
    assert 0.016 < share["val"] / 20_000 < 0.024
    small = {i for i, p in enumerate(points) if p < 0.02}
    large = {i for i, p in enumerate(points) if p < 0.1}
    assert small < large  # growing val_fraction only adds to val
