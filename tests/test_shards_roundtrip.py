"""shards: ShardWriter writes exact, atomic shards; the reader stages, plain webdataset, HTTP
URLs and Hugging Face datasets all read them back."""

from __future__ import annotations

import functools
import http.server
import json
import tarfile
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image
from support.shard_builds import encode, rows_of, write_images

from prep.imaging import ImageSettings
from prep.make_shards import ShardJob, ShardSettings, make_shards
from shards import (
    ManifestError,
    ShardWriter,
    decode,
    list_shards,
    log_and_continue,
    read_manifest,
    read_shards,
    shard_urls,
    tar_samples,
)
from shards.writer import FIXED_MTIME

JPEG = encode(Image.new("RGB", (8, 8), (10, 200, 30)), "JPEG")


def meta(key: str, **extra) -> dict:
    return {"key": key, "site": "test", "id": int(key.split("_")[1]), "tags": ["a"],
            "labels": ["a"], "label_ids": [0], **extra}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Shards from a folder of 12 images: 5 per shard, a quarter in val."""
    root = tmp_path_factory.mktemp("shards")
    write_images(root / "in" / "cats", 7)
    write_images(root / "in" / "dogs", 5, seed=1)
    job = ShardJob(out=root / "out", folder=root / "in", workers=1,
                   settings=ShardSettings(samples_per_shard=5, val_fraction=0.25,
                                          image=ImageSettings(size=32)))
    make_shards(job)
    return root / "out"


def test_writer_output_is_exact(tmp_path):
    with ShardWriter(tmp_path, "00003") as writer:
        writer.write({"__key__": "test_2", "jpg": JPEG, "json": meta("test_2", width=8)})
        writer.write({"__key__": "test_1", "json": meta("test_1"), "status": "failed_corrupt",
                      "error_message": "cannot decode"})
        writer.write({"__key__": "test_3", "jpg": JPEG, "json": meta("test_3")})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00003.parquet", "00003.tar", "00003_stats.json"]
    with tarfile.open(tmp_path / "00003.tar") as tar:
        infos = tar.getmembers()
        assert [i.name for i in infos] == ["test_2.jpg", "test_2.json", "test_3.jpg",
                                           "test_3.json"]
        assert {(i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) for i in infos} == {
            (FIXED_MTIME, 0, 0, "", "", 0o444)}
        assert tar.extractfile("test_2.jpg").read() == JPEG
        assert json.loads(tar.extractfile("test_2.json").read())["width"] == 8
    rows = pq.read_table(tmp_path / "00003.parquet").to_pylist()
    assert [(r["key"], r["status"], r["error_message"]) for r in rows] == [
        ("test_2", "success", None), ("test_1", "failed_corrupt", "cannot decode"),
        ("test_3", "success", None)]
    assert rows[0]["width"] == 8 and rows[1]["width"] is None and rows[0]["label_ids"] == [0]
    stats = json.loads((tmp_path / "00003_stats.json").read_text())
    assert (stats["count"], stats["successes"], stats["failed"]) == (3, 2, 1)
    assert stats["status"] == {"failed_corrupt": 1, "success": 2}
    assert stats["errors"] == {"cannot decode": 1}


@pytest.mark.parametrize(("sample", "message"), [
    ({"__key__": "a.b", "jpg": JPEG, "json": {}}, "invalid sample key"),
    ({"__key__": "a/b", "jpg": JPEG, "json": {}}, "invalid sample key"),
    ({"__key__": "ok_1", "json": {}}, "needs 'jpg' bytes"),
    ({"__key__": "ok_1", "jpg": JPEG}, "'json' must be a dict"),
])
def test_writer_refuses_bad_samples(tmp_path, sample, message):
    with ShardWriter(tmp_path, "00000") as writer, pytest.raises(ValueError, match=message):
        writer.write(sample)


def test_writer_refuses_repeated_keys_and_leaves_nothing_on_error(tmp_path):
    with pytest.raises(ValueError, match="duplicate key"), ShardWriter(tmp_path, "00000") as w:
        w.write({"__key__": "k_1", "jpg": JPEG, "json": meta("k_1")})
        w.write({"__key__": "k_1", "jpg": JPEG, "json": meta("k_1")})
    assert list(tmp_path.iterdir()) == []  # no final names, no temporary files


def test_stages_read_every_success_in_order(built):
    manifest = read_manifest(built)
    assert manifest["task"] == "multiclass" and manifest["complete"] is True
    for split in ("train", "val"):
        expected = [r["key"] for r in rows_of(built, split) if r["status"] == "success"]
        assert expected, split
        samples = list(read_shards(built, split))
        assert [s["__key__"] for s in samples] == expected
        for s in samples:
            assert s["image"].shape == (32, 32, 3) and s["image"].dtype == np.uint8
            assert s["meta"]["key"] == s["__key__"]
            assert s["meta"]["labels"] in (["cats"], ["dogs"])
        shards = list(list_shards(built, split))
        assert sum(s["samples"] for s in shards) == len(expected)
    assert len(shard_urls(built, "train")) == 2  # 9 or so train samples, 5 per shard
    pil = next(read_shards(built / "manifest.json", "train", image="pil"))
    assert isinstance(pil["image"], Image.Image) and pil["image"].mode == "RGB"


def test_plain_webdataset_reads_the_shards(built):
    expected = [r for r in rows_of(built, "train") if r["status"] == "success"]
    dataset = wds.WebDataset(shard_urls(built, "train"), shardshuffle=False).decode("rgb8")
    samples = list(dataset)
    assert [s["__key__"] for s in samples] == [r["key"] for r in expected]
    assert all(s["jpg"].shape == (32, 32, 3) for s in samples)
    assert [s["json"]["label_ids"] for s in samples] == [r["label_ids"] for r in expected]


def test_hugging_face_datasets_reads_the_shards(built, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset(
        "webdataset", split="train", cache_dir=str(tmp_path),
        data_files={"train": str(built / "train" / "*.tar")})
    expected = [r for r in rows_of(built, "train") if r["status"] == "success"]
    assert sorted(loaded["__key__"]) == sorted(r["key"] for r in expected)
    row = loaded[0]
    assert row["jpg"].size == (32, 32)
    assert row["json"]["labels"] in (["cats"], ["dogs"]) and "label_ids" in row["json"]


@pytest.fixture()
def http_root(built):
    handler = functools.partial(_QuietHandler, directory=str(built))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_stages_read_shards_over_http(built, http_root):
    local = [s["__key__"] for s in read_shards(built, "train")]
    urls = shard_urls(http_root, "train")
    assert all(u.startswith(http_root) for u in urls)
    assert [s["__key__"] for s in read_shards(http_root, "train")] == local
    via_wds = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)]
    assert via_wds == local


def test_manifest_errors(built, tmp_path):
    with pytest.raises(ManifestError, match="no split 'test'"):
        list(list_shards(built, "test"))
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ManifestError, match="not a booru-tagger-shards manifest"):
        read_manifest(tmp_path)
    manifest = read_manifest(built)
    with pytest.raises(ManifestError, match="not complete"):
        list(list_shards(built, "train", manifest={**manifest, "complete": False}))


def test_decode_handler_skips_a_broken_image(tmp_path):
    with ShardWriter(tmp_path, "00000") as writer:
        for i, data in enumerate([JPEG, b"\xff\xd8\xffgarbage", JPEG]):
            writer.write({"__key__": f"t_{i}", "jpg": data, "json": meta(f"t_{i}")})
    shard = [{"url": str(tmp_path / "00000.tar")}]
    with pytest.raises(ValueError):
        list(decode(tar_samples(iter(shard))))
    kept = list(decode(tar_samples(iter([{"url": str(tmp_path / "00000.tar")}])),
                       handler=log_and_continue))
    assert [s["__key__"] for s in kept] == ["t_0", "t_2"]
    assert kept[0]["image"][4, 4].tolist() == pytest.approx([10, 200, 30], abs=6)
