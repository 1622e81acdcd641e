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
from pathlib import Path

import pytest
from test_prep_make_shards_support import snapshot, write_images

s3fs = pytest.importorskip("s3fs")

pytestmark = pytest.mark.slow
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
    """40 noisy 640x480 PNGs (~25 ms each): slow enough to kill a build half way."""
    root = tmp_path_factory.mktemp("s3") / "in"
    write_images(root / "noise", 20, size=(640, 480))
    write_images(root / "grain", 20, size=(640, 480), seed=2)
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
    process = subprocess.Popen([*command, "-q"], cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while process.poll() is None and not s3.glob(f"{BUCKET}/killed/train/*_stats.json"):
            assert time.monotonic() < deadline, "no shard was uploaded within 90 s"
            s3.invalidate_cache()
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == -signal.SIGKILL, "the build ended before it could be killed"
    s3.invalidate_cache()
    partial = bucket_files(s3, "killed")
    assert json.loads(partial["manifest.json"])["complete"] is False
    done = sorted(name for name in partial if name.endswith("_stats.json"))
    assert 1 <= len(done) < 11  # of 11 shards
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
