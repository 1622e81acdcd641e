"""make-shards --engine ray: the same bytes as a local build, and a killed worker is retried."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from test_prep_make_shards_support import make_shards, snapshot, write_images

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow
ARGS = ["--samples-per-shard", "4", "--val-fraction", "0.1"]


@pytest.fixture(scope="module")
def local_ray():
    """A small local Ray instance for the module: 2 CPUs, 100 MB object store."""
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False,
             log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """32 noisy 600x450 PNGs in two classes: ~30 ms each, so a task lives long enough to kill."""
    root = tmp_path_factory.mktemp("ray") / "in"
    write_images(root / "cats", 16, size=(600, 450))
    write_images(root / "dogs", 16, size=(600, 450), seed=1)
    return root


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    """The local build: in this process, one worker."""
    from prep.cli import main

    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(["make-shards", "--folder", str(folder), "--out", str(out), "--workers", "1",
                 "--image-size", "64", "-q", *ARGS]) == 0
    return out


def assert_same_build(out: Path, reference: Path) -> None:
    """Every tar, parquet, the manifest and tags.csv byte for byte (the stats hold timings)."""
    expected = snapshot(reference)
    assert len(expected) == 2 * 9  # 9 shards (8 train, 1 val), tar + parquet each
    assert snapshot(out) == expected
    for name in ("manifest.json", "tags.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not list(out.rglob("*.tmp"))


def test_ray_build_writes_the_bytes_of_a_local_build(local_ray, folder, reference, tmp_path,
                                                      capsys):
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(tmp_path / "out"),
                            "--engine", "ray", *ARGS)
    assert code == 0, err
    assert_same_build(tmp_path / "out", reference)


def _task_workers() -> list[int]:
    """Pids of Ray worker processes running build_shard (Ray sets the process title)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if cmdline.read_bytes().startswith(b"ray::build_shard"):
                found.append(int(cmdline.parent.name))
    return found


def test_a_worker_killed_during_the_build_is_retried(local_ray, folder, reference, tmp_path,
                                                     capsys):
    killed: list[int] = []
    stop = threading.Event()

    def kill_one() -> None:
        while not stop.is_set() and not killed:
            for pid in _task_workers():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    try:
        code, err = make_shards(capsys, "--folder", str(folder), "--out",
                                str(tmp_path / "out"), "--engine", "ray", *ARGS)
    finally:
        stop.set()
        killer.join(timeout=5)
    assert killed, "no Ray worker was caught running a shard"
    assert code == 0, err
    assert_same_build(tmp_path / "out", reference)



def test_ray_tasks_upload_their_shards_to_a_url(local_ray, folder, reference, tmp_path,
                                                capsys):
    code, err = make_shards(capsys, "--folder", str(folder), "--out",
                            f"file://{tmp_path}/bucket/ds", "--staging",
                            str(tmp_path / "staging"), "--engine", "ray", *ARGS)
    assert code == 0, err
    assert_same_build(tmp_path / "bucket" / "ds", reference)
    assert not list((tmp_path / "staging").rglob("*.tar"))
