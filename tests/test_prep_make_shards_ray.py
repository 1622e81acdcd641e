"""make-shards --engine ray: the same bytes as a local build, and a killed worker is retried."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from support.shard_builds import make_shards, snapshot, wait_paused, write_images

from prep.pause import ENV

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.heavy
ARGS = ["--samples-per-shard", "4", "--val-fraction", "0.1"]


@pytest.fixture(scope="module")
def pauses(tmp_path_factory) -> Path:
    """The pause folder (prep.pause) the Ray workers see: the kill test arms a point there."""
    return tmp_path_factory.mktemp("pauses")


@pytest.fixture(scope="module")
def local_ray(pauses):
    """A small local Ray instance for the module: 2 CPUs, 100 MB object store; its workers
    see the pause folder (nothing is armed there but by the kill test)."""
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False,
             log_to_driver=False, runtime_env={"env_vars": {ENV: str(pauses)}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """32 noisy PNGs in two classes (the kill test pauses a task at an exact sample)."""
    root = tmp_path_factory.mktemp("ray") / "in"
    write_images(root / "cats", 16, size=(160, 120))
    write_images(root / "dogs", 16, size=(160, 120), seed=1)
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


def test_a_worker_killed_during_the_build_is_retried(local_ray, pauses, folder, reference,
                                                     tmp_path, capsys, caplog):
    """A task pauses after the second sample it writes (its shard half written), is killed
    there, and Ray reruns it: the build is still the local one."""
    (pauses / "task-sample.arm").write_text("2")
    killed: list[int] = []

    def kill_the_paused_task() -> None:
        pid = wait_paused(pauses, "task-sample")
        assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::build_shard")
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_the_paused_task, daemon=True)
    killer.start()
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(tmp_path / "out"),
                            "--engine", "ray", *ARGS)
    killer.join(timeout=60)
    assert killed, "no Ray task paused to be killed"
    assert code == 0, err
    assert "failed on the cluster" not in caplog.text  # Ray reran it, not the local fallback
    assert_same_build(tmp_path / "out", reference)


def test_ray_tasks_upload_their_shards_to_a_url(local_ray, folder, reference, tmp_path,
                                                capsys):
    code, err = make_shards(capsys, "--folder", str(folder), "--out",
                            f"file://{tmp_path}/bucket/ds", "--staging",
                            str(tmp_path / "staging"), "--engine", "ray", *ARGS)
    assert code == 0, err
    assert_same_build(tmp_path / "bucket" / "ds", reference)
    assert not list((tmp_path / "staging").rglob("*.tar"))
