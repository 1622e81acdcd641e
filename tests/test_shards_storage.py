"""Object storage without a server: file:// through fsspec, optional extras, refused flags."""

from __future__ import annotations

import builtins
import json

import pytest
from support.shard_builds import make_shards, snapshot, write_images

from shards.storage import Storage, StorageError, is_object_url, open_url

ARGS = ["--samples-per-shard", "2", "--val-fraction", "0.2"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("storage") / "in"
    write_images(root / "a", 4)
    write_images(root / "b", 3, seed=1)
    return root


def test_is_object_url():
    assert is_object_url("s3://bucket/ds") and is_object_url("gs://b/x")
    assert is_object_url("file:///tmp/x")
    assert not is_object_url("https://host/ds") and not is_object_url("pipe:cat x")
    assert not is_object_url("/tmp/ds") and not is_object_url("C:\\data")


def test_make_shards_to_a_url_uploads_the_local_build(folder, tmp_path, capsys):
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(tmp_path / "local"),
                            *ARGS)
    assert code == 0, err
    url = f"file://{tmp_path}/bucket/ds"
    code, err = make_shards(capsys, "--folder", str(folder), "--out", url, "--staging",
                            str(tmp_path / "staging"), *ARGS)
    assert code == 0, err
    remote, local = tmp_path / "bucket" / "ds", tmp_path / "local"
    assert snapshot(remote) == snapshot(local) and len(snapshot(local)) >= 6
    for name in ("manifest.json", "tags.csv"):
        assert (remote / name).read_bytes() == (local / name).read_bytes()
    assert json.loads((remote / "manifest.json").read_text())["complete"] is True
    assert not list(remote.rglob("*.tmp")) and not list((tmp_path / "staging").rglob("*.tar"))
    # a rerun finds every shard uploaded and rebuilds nothing
    before = {p: p.stat().st_mtime_ns for p in remote.rglob("*.tar")}
    code, err = make_shards(capsys, "--folder", str(folder), "--out", url, *ARGS)
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in remote.rglob("*.tar")} == before


def test_a_damaged_upload_is_rebuilt(folder, tmp_path, capsys):
    url = f"file://{tmp_path}/bucket"
    assert make_shards(capsys, "--folder", str(folder), "--out", url, *ARGS)[0] == 0
    tar = tmp_path / "bucket" / "train" / "00000.tar"
    good = tar.read_bytes()
    tar.write_bytes(good[:1000])  # another size than its stats record
    assert make_shards(capsys, "--folder", str(folder), "--out", url, *ARGS)[0] == 0
    assert tar.read_bytes() == good


def test_other_settings_in_the_bucket_are_refused(folder, tmp_path, capsys):
    url = f"file://{tmp_path}/bucket"
    assert make_shards(capsys, "--folder", str(folder), "--out", url, *ARGS)[0] == 0
    code, err = make_shards(capsys, "--folder", str(folder), "--out", url, *ARGS,
                            "--image-size", "48")
    assert code == 2 and "image.size: 64 then, 48 now" in err and "\n" not in err


def test_storage_put_get_size_listing(tmp_path):
    store = Storage(f"file://{tmp_path}/root/")
    (tmp_path / "x.bin").write_bytes(b"12345")
    store.put(tmp_path / "x.bin", "a/x.bin")
    assert store.size("a/x.bin") == 5 and store.get("a/x.bin") == b"12345"
    assert store.size("missing") is None and store.get("missing") is None
    assert store.listing() == ["a/x.bin"]
    with open_url(store.location("a/x.bin")) as stream:
        assert stream.read() == b"12345"
    with pytest.raises(FileNotFoundError):
        open_url(store.location("missing"))


def test_a_missing_protocol_package_names_the_extra(folder, tmp_path, capsys):
    try:
        import gcsfs  # noqa: F401
        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    with pytest.raises(StorageError, match=r"gcsfs: pip install 'booru-tagger\[gcs\]'"):
        open_url("gs://bucket/x.tar")
    code, err = make_shards(capsys, "--folder", str(folder), "--out", "gs://bucket/ds", *ARGS)
    assert code == 2 and err.startswith("prep: error: ") and "booru-tagger[gcs]" in err
    assert "\n" not in err


def test_ray_is_an_optional_extra(folder, tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(tmp_path / "out"),
                            "--engine", "ray")
    assert code == 2
    assert err == "prep: error: --engine ray needs Ray: pip install 'booru-tagger[ray]'"


@pytest.mark.parametrize("argv, message", [
    (["--ray-address", "auto"], "--ray-address needs --engine ray"),
    (["--staging", "/tmp/x"], "--staging is for an object-storage --out"),
])
def test_flags_that_do_not_fit_are_refused(folder, tmp_path, capsys, argv, message):
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(tmp_path / "o"), *argv)
    assert code == 2 and message in err


def test_num_nodes_with_a_url_is_refused(folder, tmp_path, capsys):
    code, err = make_shards(capsys, "--folder", str(folder), "--out", f"file://{tmp_path}/b",
                            "--num-nodes", "2")
    assert code == 2 and "use --engine ray" in err


def test_fetched_files_follow_a_rewritten_object_of_the_same_size(tmp_path):
    """A run fetched from storage is cached; retraining rewrites model.safetensors with the
    same size, and the next fetch must bring the new bytes, not the cached ones."""
    from shards.storage import fetch_files
    bucket = tmp_path / "bucket" / "run"
    bucket.mkdir(parents=True)
    (bucket / "model.safetensors").write_bytes(b"weights-1")
    cache = tmp_path / "cache"
    got = fetch_files(f"file://{bucket}", ("model.safetensors",), cache)
    assert (got / "model.safetensors").read_bytes() == b"weights-1"
    (bucket / "model.safetensors").write_bytes(b"weights-2")
    got = fetch_files(f"file://{bucket}", ("model.safetensors",), cache)
    assert (got / "model.safetensors").read_bytes() == b"weights-2"
    (got / "model.safetensors").write_bytes(b"tampered!")    # unchanged object: cache kept
    assert fetch_files(f"file://{bucket}", ("model.safetensors",), cache) == got
    assert (got / "model.safetensors").read_bytes() == b"tampered!"
