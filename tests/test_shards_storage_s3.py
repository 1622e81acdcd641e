"""Shards in S3, against moto's standalone S3 server on 127.0.0.1 (a real S3 API over HTTP):
make-shards to s3://, kill -9 and resume, train --stream from s3://, webdataset on the URLs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from support.shard_builds import (
    arm_pause,
    rows_of,
    snapshot,
    wait_paused,
    write_images,
)

s3fs = pytest.importorskip("s3fs")

pytestmark = pytest.mark.heavy
ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--image-size", "64", "--samples-per-shard", "4", "--val-fraction", "0.1"]
BUCKET = "shards-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto_server on a free port; the AWS variables point boto at it (dummy credentials)."""
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        pytest.skip("moto_server (moto[server]) is not installed")
    port = _free_port()
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.1)
        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        yield fs
    finally:
        process.kill()
        process.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """40 noisy PNGs in two classes (the kill -9 test pauses the build at an exact shard)."""
    root = tmp_path_factory.mktemp("s3") / "in"
    write_images(root / "noise", 20, size=(160, 120))
    write_images(root / "grain", 20, size=(160, 120), seed=2)
    return root


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    from prep.cli import main

    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(["make-shards", "--folder", str(folder), "--out", str(out), "--workers", "1",
                 "-q", *ARGS]) == 0
    return out


def bucket_files(fs, prefix: str) -> dict[str, bytes]:
    """Every object under ``s3://BUCKET/prefix`` by relative name."""
    root = f"{BUCKET}/{prefix}"
    return {path[len(root) + 1:]: fs.cat_file(path) for path in fs.find(root)}


def test_build_into_s3_kill_9_and_resume(s3, folder, reference, tmp_path):
    url = f"s3://{BUCKET}/killed"
    command = [sys.executable, "-m", "prep", "make-shards", "--folder", str(folder), "--out",
               url, "--staging", str(tmp_path / "staging"), "--workers", "1", *ARGS]
    pauses = tmp_path / "pauses"
    env = arm_pause(pauses, "shard-uploaded", 2)  # the upload thread holds after shard 2
    process = subprocess.Popen([*command, "-q"], cwd=ROOT, start_new_session=True, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_paused(pauses, "shard-uploaded", process)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL
    s3.invalidate_cache()
    partial = bucket_files(s3, "killed")
    assert json.loads(partial["manifest.json"])["complete"] is False
    done = sorted(name for name in partial if name.endswith("_stats.json"))
    assert done == ["train/00000_stats.json", "train/00001_stats.json"]  # of 11 shards
    expected = snapshot(reference)
    for name, data in partial.items():  # every uploaded tar and parquet is already final
        if name in expected:
            assert data == expected[name], name

    rerun = subprocess.run([*command, "-v"], cwd=ROOT, capture_output=True, text=True,
                           timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {len(done)} of 11 shards already done" in rerun.stderr
    s3.invalidate_cache()
    final = bucket_files(s3, "killed")
    assert {k: v for k, v in final.items() if k in expected} == expected
    for name in ("manifest.json", "tags.csv"):
        assert final[name] == (reference / name).read_bytes(), name
    assert sorted(final) == sorted([*expected, "manifest.json", "tags.csv",
                                    *(p.relative_to(reference).as_posix()
                                      for p in reference.rglob("*_stats.json"))])
    secret = os.environ["AWS_SECRET_ACCESS_KEY"].encode()
    assert not any(secret in data for data in final.values())
    assert secret.decode() not in rerun.stderr + rerun.stdout


@pytest.fixture(scope="module")
def dataset(s3, folder, reference) -> str:
    """The reference build uploaded in-process to s3://BUCKET/full."""
    from prep.cli import main

    url = f"s3://{BUCKET}/full"
    assert main(["make-shards", "--folder", str(folder), "--out", url, "--workers", "1", "-q",
                 *ARGS]) == 0
    return url


def test_train_streams_from_s3_and_tag_loads_the_run_from_s3(s3, dataset, folder, tmp_path,
                                                               capsys):
    torch = pytest.importorskip("torch")
    from train.cli import main

    out = tmp_path / "run"
    code = main(["--stream", "--shards", dataset, "--out", str(out), "--arch", "resnet18",
                 "--weights", "none", "--image-size", "32", "--batch-size", "4",
                 "--max-steps", "3", "--workers", "0", "--shuffle-buffer", "8", "-q"])
    assert code == 0
    checkpoint = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == 3
    config = (out / "config.json").read_text()
    assert dataset in config and os.environ["AWS_SECRET_ACCESS_KEY"] not in config

    from train.tag.cli import main as tag_main

    for name in ("config.json", "tags.csv", "model.safetensors"):
        s3.put_file(str(out / name), f"{BUCKET}/run/{name}")
    images = [str(p) for p in sorted((folder / "noise").iterdir())[:3]]
    capsys.readouterr()
    assert tag_main(["--model", str(out), *images, "--device", "cpu"]) == 0
    local = capsys.readouterr().out.splitlines()[:-1]  # the last line has timings
    assert tag_main(["--model", f"s3://{BUCKET}/run/", *images, "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[:-1] == local and "000.png" in local[0]


def test_webdataset_reads_the_same_urls(dataset, reference):
    import webdataset as wds

    from shards import shard_urls
    from shards.storage import register_webdataset

    register_webdataset()
    urls = shard_urls(dataset, "train")
    assert urls[0] == f"{dataset}/train/00000.tar"
    keys = [sample["__key__"] for sample in wds.WebDataset(urls, shardshuffle=False)]
    local = [sample["__key__"] for sample in
             wds.WebDataset(shard_urls(reference, "train"), shardshuffle=False)]
    assert keys == local and len(keys) == 37


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A scrape folder (raw/: posts parquet parts + images) and a captioned folder (pics/)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shards.tags import write_tags

    root = tmp_path_factory.mktemp("inputs")
    raw = root / "raw"
    images = write_images(raw / "images" / "ab", 9) + write_images(raw / "images" / "cd", 3,
                                                                   seed=3)
    (raw / "posts").mkdir()
    tags = ["cat", "dog", "tree"]
    for part in range(2):
        rows = [{"site": "danbooru", "id": 10 * i + part, "md5": f"m{i}",
                 "rating": "general", "tags": [tags[i % 3], tags[(i + 1) % 3]],
                 "image_path": path.relative_to(raw).as_posix(),
                 "status": "downloaded" if i != 4 else "failed"}
                for i, path in enumerate(images) if i % 2 == part]
        rows.append({"site": "gelbooru", "id": part, "md5": f"bad{part}", "rating": "general",
                     "tags": ["cat"], "image_path": "../outside.png", "status": "downloaded"})
        pq.write_table(pa.Table.from_pylist(rows), raw / "posts" / f"part-{part}.parquet")
    write_tags(root / "tags.csv", [(i, name, 0, 5) for i, name in enumerate(tags)])
    pics = root / "pics"
    for i, path in enumerate(write_images(pics / "a", 5, seed=4) + write_images(pics / "b", 4,
                                                                               seed=5)):
        if i != 2:  # one image without a caption: no tags
            path.with_suffix(".txt").write_text(f"{tags[i % 3]}, {tags[(i + 2) % 3]}\n")
    write_images(pics / ".hidden", 1, seed=6)  # left out, on disk as in the bucket
    return root


def _upload(fs, local: Path, prefix: str) -> str:
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{BUCKET}/{prefix}/{path.relative_to(local).as_posix()}")
    return f"s3://{BUCKET}/{prefix}/"


def _build(tmp_path: Path, name: str, *argv: str) -> Path:
    from prep.cli import main

    out = tmp_path / name
    assert main(["make-shards", "--out", str(out), "--workers", "1", "-q", *ARGS, *argv]) == 0
    return out


def _same_build(local: Path, remote: Path) -> None:
    assert snapshot(remote) == snapshot(local) and snapshot(local)
    assert (remote / "tags.csv").read_bytes() == (local / "tags.csv").read_bytes()
    manifests = [json.loads((out / "manifest.json").read_text()) for out in (local, remote)]
    for manifest in manifests:  # a folder's tag source names the folder or its URL
        manifest["tags"].pop("source")
    assert manifests[0] == manifests[1]


def test_make_shards_reads_posts_and_images_from_s3(s3, inputs, tmp_path):
    tags = str(inputs / "tags.csv")
    local = _build(tmp_path, "local", "--posts", str(inputs / "raw"), "--tags", tags)
    rows = [r for split in ("train", "val") for r in rows_of(local, split)]
    assert Counter(r["status"] for r in rows) == {"success": 11, "failed_bad_path": 2}
    url = _upload(s3, inputs / "raw", "in/raw")
    _same_build(local, _build(tmp_path, "remote", "--posts", url, "--tags", tags,
                              "--workers", "2"))  # worker processes read the bucket too
    # posts here, images in the bucket; and one posts file given by its URL
    _same_build(local, _build(tmp_path, "images", "--posts", str(inputs / "raw"), "--tags", tags,
                              "--images-root", url))
    one = _build(tmp_path, "one", "--posts", f"{url}posts/part-0.parquet", "--tags", tags,
                 "--images-root", url)
    assert len(snapshot(one)) and all(r["id"] % 10 == 0 for r in rows_of(one))


def test_make_shards_reads_a_captioned_folder_from_s3(s3, inputs, tmp_path):
    local = _build(tmp_path, "local", "--folder", str(inputs / "pics"))
    assert len(rows_of(local)) == 8  # the image without a caption has no tag: left out
    url = _upload(s3, inputs / "pics", "in/pics")
    remote = _build(tmp_path, "remote", "--folder", url)
    _same_build(local, remote)
    manifest = json.loads((remote / "manifest.json").read_text())
    assert manifest["tags"]["source"] == f"built from {url}"
