"""shards/ owns the boundary files: tags.csv, manifest.json, atomic writes, brace listings."""

from __future__ import annotations

import csv

import pytest

from shards import ManifestError, TagsError, read_manifest, read_tags, write_manifest, write_tags
from shards.atomic import atomic_write
from shards.manifest import pattern_manifest, split_samples, split_shards


def test_tags_roundtrip_and_csv_module_agrees(tmp_path):
    rows = [(9999999, "general", 9, 5), (-1, "long_hair", 0, 3), (12, 'a,"b"', 4, 1)]
    write_tags(tmp_path / "tags.csv", rows)
    with (tmp_path / "tags.csv").open(newline="", encoding="utf-8") as fh:
        assert [tuple(r) for r in csv.reader(fh)][1:] == [tuple(map(str, r)) for r in rows]
    back = read_tags(tmp_path / "tags.csv")
    assert [(r["tag_id"], r["name"], r["category"], r["count"]) for r in back] == rows


@pytest.mark.parametrize("text, message", [
    ("name,count\nsolo,1\n", "not a tag index"),
    ("tag_id,name,category,count\n-1,solo,0,many\n", ":2: expected"),
    ("tag_id,name,category,count\n-1,solo,0\n", ":2: expected"),
    ("tag_id,name,category,count\n-1,solo,0,1\n-1,solo,0,2\n", "repeated names"),
    ("tag_id,name,category,count\n", "no rows"),
])
def test_a_bad_tag_index_is_refused_with_the_reason(tmp_path, text, message):
    (tmp_path / "tags.csv").write_text(text)
    with pytest.raises(TagsError, match=message):
        read_tags(tmp_path / "tags.csv")


def test_an_interrupted_atomic_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as fh:
        fh.write("new, half written")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def _tars(folder, sizes: list[int], stats: bool):
    """Tar shards of `sizes` samples: with stats (make-shards' ShardWriter) or plain tars."""

    import webdataset as wds

    from shards import ShardWriter
    folder.mkdir(parents=True, exist_ok=True)
    key = 0
    for n, size in enumerate(sizes):
        if stats:
            with ShardWriter(folder, f"{n:05d}") as writer:
                for _ in range(size):
                    writer.write({"__key__": f"k_{key}", "jpg": b"\xff\xd8\xff", "json": {}})
                    key += 1
            continue
        with wds.TarWriter(str(folder / f"{n:05d}.tar")) as tw:
            for _ in range(size):
                tw.write({"__key__": f"k_{key}", "jpg": b"\xff\xd8\xff", "json": b"{}"})
                key += 1


@pytest.mark.parametrize("stats", [True, False], ids=["stats files", "plain tars"])
def test_a_brace_pattern_counts_each_shard_without_a_manifest(tmp_path, stats, caplog):
    _tars(tmp_path / "train", [40, 40, 40, 13], stats)
    pattern = f"{tmp_path}/train/{{00000..00003}}.tar"
    manifest = pattern_manifest(pattern, samples=130)          # expected 130: a warning
    shards = split_shards(manifest, str(tmp_path), "train")
    assert [s["url"] for s in shards] == [f"{tmp_path}/train/0000{i}.tar" for i in range(4)]
    assert [s["samples"] for s in shards] == [40, 40, 40, 13]
    assert split_samples(manifest, "train") == 133
    assert "hold 133 samples, not the 130 expected" in caplog.text
    assert ("counting their samples" in caplog.text) is not stats
    with pytest.raises(ManifestError, match=".tar"):
        pattern_manifest(f"{tmp_path}/{{a,b}}.json")
    with pytest.raises(ManifestError, match="00009.tar: cannot read it to count"):
        pattern_manifest(f"{tmp_path}/train/{{00003,00009}}.tar")


def test_the_manifest_writer_checks_what_it_writes(tmp_path):
    with pytest.raises(ManifestError, match="not a booru-tagger-shards manifest"):
        write_manifest(tmp_path, {"format_version": 1, "splits": {}})
    _tars(tmp_path / "data", [3, 1], stats=False)
    manifest = pattern_manifest(f"{tmp_path}/data/{{00000..00001}}.tar")
    write_manifest(tmp_path, {**manifest, "complete": False})
    assert read_manifest(tmp_path)["splits"] == manifest["splits"]
    with pytest.raises(ManifestError, match="not complete"):
        split_shards(read_manifest(tmp_path), tmp_path, "train")


def test_a_new_manifest_lists_its_tars_as_webdataset_expands_them(tmp_path):
    from braceexpand import braceexpand

    from shards.manifest import new_manifest
    planned = {"train": [(f"{i:05d}", 10) for i in range(12)], "val": [("00000", 3)],
               "test": []}
    body = new_manifest(shards=planned, task="multilabel",
                        tags={"file": "tags.csv", "sha256": "0" * 64, "rows": 5},
                        image={"format": "webp", "size": 64}, split_rule="by hand",
                        selection={"selected": 123}, grouping={}, build={"x": 1})
    assert body["complete"] is False and body["keys"].endswith("<key>.webp")
    for split, shards in planned.items():
        info = body["splits"][split]
        assert info["count"] == sum(n for _, n in shards)
        expanded = list(braceexpand(info["urls"])) if info["urls"] else []
        assert expanded == [f"{split}/{name}.tar" for name, _ in shards]
    write_manifest(tmp_path, body)
    assert read_manifest(tmp_path) == body
    with pytest.raises(ManifestError, match="not finished"):
        read_manifest(tmp_path, allow_incomplete=False)
