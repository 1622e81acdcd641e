"""make-shards: identical bytes on every run, kill -9 (in the first pass or the shards) then
resume, and refusing to mix builds."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.shard_builds import (
    arm_pause,
    make_shards,
    snapshot,
    wait_paused,
    write_images,
)

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--samples-per-shard", "4", "--val-fraction", "0.1"]


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """40 noisy PNGs (the builds pause at an exact item to be killed: any speed will do)."""
    root = tmp_path_factory.mktemp("resume") / "in"
    write_images(root / "noise", 40, size=(160, 120))
    return root


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    """An uninterrupted build, in this process, one worker."""
    from prep.cli import main

    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(["make-shards", "--folder", str(folder), "--out", str(out), "--image-size",
                 "64", "--workers", "1", "-q", *ARGS]) == 0
    return out


def test_same_input_same_bytes_whatever_the_workers(folder, reference, tmp_path, capsys):
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(tmp_path / "out"),
                            "--workers", "2", *ARGS)
    assert code == 0, err
    expected = snapshot(reference)
    assert len(expected) == 2 * 11  # 34 train samples in 9 shards, 6 val in 2; tar + parquet
    assert snapshot(tmp_path / "out") == expected
    for name in ("manifest.json", "tags.csv"):
        assert (tmp_path / "out" / name).read_bytes() == (reference / name).read_bytes()


def _kill_when(command: list[str], pauses: Path, point: str, call: int) -> list[int]:
    """Start ``command`` armed to pause at the ``call``-th ``point`` (prep.pause), SIGKILL it
    (not its workers) there; its worker pids."""
    env = arm_pause(pauses, point, call)
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_paused(pauses, point, process) == process.pid
        workers = children(process.pid)
        process.kill()  # SIGKILL to the main process only
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        # the orphaned workers notice (they poll their parent every 0.5 s) and exit by themselves
        deadline = time.monotonic() + 60
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) >= 2 and not any(alive(pid) for pid in workers)  # + resource tracker
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return workers


def _command(out: Path, folder: Path) -> list[str]:
    return [sys.executable, "-m", "prep", "make-shards", "--folder", str(folder), "--out",
            str(out), "--image-size", "64", "--workers", "2", *ARGS, "-v"]


def test_kill_9_in_the_first_pass_then_resume(folder, reference, tmp_path):
    out = tmp_path / "out"
    command = _command(out, folder)
    _kill_when(command, tmp_path / "pauses", "first-pass-part", 2)  # two parts of 4 pictures
    assert len(list(out.glob(".stage/*/part-*[0-9a-f].feather"))) == 2
    assert not list(out.glob("*/*_stats.json"))  # no shard before the split is known

    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "first pass: 8 of 40 pictures cached before, 32 to prepare" in rerun.stderr
    assert snapshot(out) == snapshot(reference)
    assert json.loads((out / "manifest.json").read_text()) == json.loads(
        (reference / "manifest.json").read_text())
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.images.feather"))


def test_kill_9_in_the_shards_then_resume(folder, reference, tmp_path):
    """The stage of a finished build keeps hashes, not images: seeded with it, this run
    decodes every picture again in the shard pass, which is killed half way."""
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(reference / ".stage", out / ".stage")
    command = _command(out, folder)
    _kill_when(command, tmp_path / "pauses", "shard-done", 3)  # after the third shard

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False
    done = sorted(p.name.removesuffix("_stats.json") for p in out.glob("train/*_stats.json"))
    assert done == ["00000", "00001", "00002"]  # of 9 train shards (then 2 val)
    expected = snapshot(reference)
    for name, data in snapshot(out).items():  # whatever has a final name is complete
        assert data == expected[name], name
    kept = {p: p.stat().st_mtime_ns for p in out.glob("train/*") if p.stem[:5] in done}
    for stale in (".manifest.json.99999.tmp", "train/.00008.tar.99999.tmp"):  # killed mid-write
        (out / stale).write_bytes(b"half a file")

    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "first pass: 40 of 40 pictures cached before" in rerun.stderr
    assert f"resuming: {len(done)} of 11 shards already done" in rerun.stderr
    assert snapshot(out) == expected
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # done shards were not rewritten
    assert not list(out.rglob("*.tmp"))
    assert json.loads((out / "manifest.json").read_text()) == json.loads(
        (reference / "manifest.json").read_text())


def test_other_arguments_are_refused_then_overwritten(folder, reference, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(out), *ARGS)
    assert code == 0, err
    before = snapshot(out)
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(out), *ARGS,
                            "--image-size", "48", "--format", "webp")
    assert code == 2
    assert err.startswith("prep: error: ") and "\n" not in err
    assert "image.size: 64 then, 48 now" in err and "image.format: 'jpg' then, 'webp' now" in err
    assert "--overwrite" in err
    assert snapshot(out) == before
    assert len(list((out / ".stage").iterdir())) == 1  # refused before the first pass
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(out), *ARGS,
                            "--image-size", "48", "--overwrite")
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["image"]["size"] == 48
    assert snapshot(out).keys() == before.keys() and snapshot(out) != before


def test_changed_input_is_refused(tmp_path, capsys):
    write_images(tmp_path / "in" / "a", 3)
    code, err = make_shards(capsys, "--folder", str(tmp_path / "in"), "--out",
                            str(tmp_path / "out"))
    assert code == 0, err
    write_images(tmp_path / "in" / "b", 1, seed=5)
    code, err = make_shards(capsys, "--folder", str(tmp_path / "in"), "--out",
                            str(tmp_path / "out"))
    assert code == 2
    assert "the selected posts or their metadata changed (3 samples then, 4 now)" in err
    assert "the tag index changed" in err


def test_a_foreign_output_folder_is_refused(tmp_path, capsys):
    write_images(tmp_path / "in" / "a", 2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    code, err = make_shards(capsys, "--folder", str(tmp_path / "in"), "--out",
                            str(tmp_path / "out"))
    assert code == 2 and "is not empty and has no manifest.json" in err
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, capsys):
    write_images(tmp_path / "in" / "a", 2)
    out = tmp_path / "out"
    out.mkdir()
    with (out / ".make-shards.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running make-shards holds it
        code, err = make_shards(capsys, "--folder", str(tmp_path / "in"), "--out", str(out))
    assert code == 2 and "another make-shards run is writing to" in err
    code, err = make_shards(capsys, "--folder", str(tmp_path / "in"), "--out", str(out))
    assert code == 0, err
