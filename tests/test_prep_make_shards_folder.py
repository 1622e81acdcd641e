"""make-shards --folder: class subfolders (multiclass) and caption files (multilabel)."""

from __future__ import annotations

import json

from PIL import Image
from support.shard_builds import encode, make_shards, rows_of, write_images

from shards import read_shards


def manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def test_class_subfolders(tmp_path, capsys):
    write_images(tmp_path / "in" / "mona", 3)
    write_images(tmp_path / "in" / "other" / "deeper", 2, fmt="JPEG", seed=1)
    (tmp_path / "in" / "stray.png").write_bytes(encode(Image.new("RGB", (9, 9)), "PNG"))
    (tmp_path / "in" / "mona" / "notes.md").write_text("not an image")
    (tmp_path / "in" / ".hidden").mkdir()
    write_images(tmp_path / "in" / ".hidden", 1, seed=2)
    out = tmp_path / "out"
    code, err = make_shards(capsys, "--folder", str(tmp_path / "in"), "--out", str(out),
                            "--val-fraction", "0")
    assert code == 0, err
    assert (out / "tags.csv").read_text() == (
        "tag_id,name,category,count\n-1,mona,0,3\n-1,other,0,2\n")
    info = manifest(out)
    assert info["task"] == "multiclass" and info["build"]["input"] == "folder-classes"
    assert info["selection"]["outside_class_folder"] == 1 and info["selection"]["selected"] == 5
    samples = {s["meta"]["image_path"]: s["meta"] for s in read_shards(out, "train")}
    assert sorted(samples) == ["mona/000.png", "mona/001.png", "mona/002.png",
                               "other/deeper/000.jpg", "other/deeper/001.jpg"]
    for path, meta in samples.items():
        cls = path.split("/")[0]
        assert meta["labels"] == [cls] and meta["tags"] == [cls]
        assert meta["label_ids"] == [["mona", "other"].index(cls)]
        assert meta["site"] == "folder" and meta["key"] == f"folder_{meta['id']}"
        assert meta["rating"] is None and len(meta["md5"]) == 32


def test_caption_files(tmp_path, capsys):
    folder = tmp_path / "in"
    paths = write_images(folder / "a", 2) + write_images(folder / "b", 2, seed=3)
    paths[0].with_suffix(".txt").write_text("cat, dog\n outdoors ,")
    paths[1].with_suffix(".txt").write_text("dog, ,dog")
    paths[2].with_suffix(".txt").write_text("bird")
    # paths[3] has no caption: untagged
    out = tmp_path / "out"
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(out),
                            "--val-fraction", "0")
    assert code == 0, err
    assert (out / "tags.csv").read_text().splitlines() == [
        "tag_id,name,category,count", "-1,dog,0,2", "-1,bird,0,1", "-1,cat,0,1",
        "-1,outdoors,0,1"]
    info = manifest(out)
    assert info["task"] == "multilabel" and info["build"]["input"] == "folder-captions"
    assert info["selection"]["untagged"] == 1 and info["selection"]["selected"] == 3
    labels = {r["image_path"]: (r["tags"], r["labels"], r["label_ids"]) for r in rows_of(out)}
    assert labels == {
        "a/000.png": (["cat", "dog", "outdoors"], ["dog", "cat", "outdoors"], [0, 2, 3]),
        "a/001.png": (["dog"], ["dog"], [0]),
        "b/000.png": (["bird"], ["bird"], [1]),
    }
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(tmp_path / "top"),
                            "--val-fraction", "0", "--min-count", "2", "--keep-untagged")
    assert code == 0, err
    assert (tmp_path / "top" / "tags.csv").read_text().splitlines()[1:] == ["-1,dog,0,2"]
    kept = {r["image_path"]: r["labels"] for r in rows_of(tmp_path / "top")}
    assert kept == {"a/000.png": ["dog"], "a/001.png": ["dog"], "b/000.png": [],
                    "b/001.png": []}


def test_given_index_and_duplicate_files(tmp_path, capsys):
    paths = write_images(tmp_path / "in" / "x", 2)
    (tmp_path / "in" / "x" / "copy.png").write_bytes(paths[0].read_bytes())
    write_images(tmp_path / "in" / "y", 1, seed=4)
    index = tmp_path / "tags.csv"
    index.write_text("tag_id,name,category,count\n-1,y,0,10\n-1,x,0,5\n")
    out = tmp_path / "out"
    code, err = make_shards(capsys, "--folder", str(tmp_path / "in"), "--tags", str(index),
                            "--out", str(out), "--val-fraction", "0")
    assert code == 0, err
    assert (out / "tags.csv").read_bytes() == index.read_bytes()
    info = manifest(out)
    assert info["selection"]["duplicate_md5"] == 1 and info["selection"]["selected"] == 3
    rows = rows_of(out)
    assert sorted(r["image_path"] for r in rows if r["image_path"].startswith("x/")) in (
        ["x/000.png", "x/001.png"], ["x/001.png", "x/copy.png"])
    assert {r["image_path"][0]: r["label_ids"] for r in rows} == {"x": [1], "y": [0]}


def test_folder_usage_errors(tmp_path, capsys):
    code, err = make_shards(capsys, "--folder", str(tmp_path / "missing"), "--out",
                            str(tmp_path / "out"))
    assert code == 2 and "not a directory" in err
    (tmp_path / "empty").mkdir()
    code, err = make_shards(capsys, "--folder", str(tmp_path / "empty"), "--out",
                            str(tmp_path / "out"))
    assert code == 2 and "no image files" in err
    code, err = make_shards(capsys, "--out", str(tmp_path / "out"))
    assert code == 2 and "give --posts (with --tags) or --folder" in err
    assert not (tmp_path / "out").exists()


def test_config_file_values_and_flags_that_override_them(tmp_path, capsys):
    from prep.cli import main

    write_images(tmp_path / "in" / "a", 2)
    config = tmp_path / "shards.toml"
    config.write_text(f'folder = "{tmp_path / "in"}"\nimage-size = 32\n'
                      'resize_mode = "center_crop"\nformat = "webp"\nworkers = 1\n'
                      'keep-untagged = true\n')
    assert main(["make-shards", "--config", str(config), "--out", str(tmp_path / "out"),
                 "--format", "jpg", "-q"]) == 0, capsys.readouterr().err
    image = manifest(tmp_path / "out")["image"]
    assert (image["size"], image["resize_mode"], image["format"]) == (32, "center_crop", "jpg")
    assert manifest(tmp_path / "out")["build"]["keep_untagged"] is True


def test_caption_tags_match_the_index_in_every_caption_spelling(tmp_path, capsys):
    """Captions as `tag --underscores-to-spaces` and `--escape-parentheses` write them match
    the model's tags.csv rows; the tags that match nothing are counted and named."""
    folder = tmp_path / "in"
    paths = write_images(folder, 3)
    paths[0].with_suffix(".txt").write_text(
        "orange background, diamond \\(shape\\), star_(symbol), ^_^, my own tag\n")
    paths[1].with_suffix(".txt").write_text("diamond (shape), orange_background, my own tag\n")
    paths[2].with_suffix(".txt").write_text("long hair, circle\n")
    index = tmp_path / "tags.csv"
    index.write_text("tag_id,name,category,count\n-1,orange_background,0,9\n"
                     "-1,diamond_(shape),0,8\n-1,star_(symbol),0,7\n-1,^_^,0,6\n"
                     "-1,long_hair,0,5\n-1,circle,0,4\n")
    out = tmp_path / "out"
    code, err = make_shards(capsys, "--folder", str(folder), "--tags", str(index), "--out",
                            str(out), "--val-fraction", "0", "--workers", "0")
    assert code == 0, err
    labels = {r["image_path"]: r["labels"] for r in rows_of(out)}
    assert labels == {
        "000.png": ["orange_background", "diamond_(shape)", "star_(symbol)", "^_^"],
        "001.png": ["orange_background", "diamond_(shape)"],
        "002.png": ["long_hair", "circle"]}
    tags = {r["image_path"]: r["tags"] for r in rows_of(out)}
    assert tags["002.png"] == ["long hair", "circle"]        # the caption as written
    # 9 distinct caption tags (two spellings of one tag count twice), one matches no row
    assert "1 of 9 distinct caption tags match no row of tags.csv" in err
    assert "'my own tag' (2)" in err


def test_a_folder_whose_caption_tags_mostly_match_nothing_is_refused(tmp_path, capsys):
    folder = tmp_path / "in"
    paths = write_images(folder, 2)
    paths[0].with_suffix(".txt").write_text("cat, dog, sky\n")
    paths[1].with_suffix(".txt").write_text("cat, tree\n")
    index = tmp_path / "tags.csv"
    index.write_text("tag_id,name,category,count\n-1,sky,0,9\n-1,circle,0,4\n")
    out = tmp_path / "out"
    argv = ("--folder", str(folder), "--tags", str(index), "--out", str(out),
            "--val-fraction", "0", "--workers", "0")
    code, err = make_shards(capsys, *argv)
    assert code == 2 and len(err.splitlines()) == 1
    assert "3 of 4 distinct caption tags match no row of tags.csv" in err
    assert "'cat' (2)" in err and "--allow-unknown-tags" in err
    assert not (out / "manifest.json").exists()
    code, err = make_shards(capsys, *argv, "--allow-unknown-tags")
    assert code == 0, err
    assert {r["image_path"]: r["labels"] for r in rows_of(out)} == {"000.png": ["sky"]}
