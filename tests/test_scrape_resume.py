"""Interrupt `python -m scrape` (kill -9, Ctrl-C), rerun it, and compare with an uninterrupted run.

    .venv/bin/python -m pytest tests/test_scrape_resume.py -q
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.scrape_runs import (
    FAST,
    IMAGE_PATH,
    by_id,
    check_images,
    file_gets,
    image_files,
    log_since,
    md5_of,
    read_rows,
    scrape,
)

from scrape.emulator import EmulatorThread

ROOT = Path(__file__).resolve().parents[1]
SERVED = 25     # the interrupted run gets this many files, then the emulator holds the rest


@pytest.fixture(scope="module")
def small_world():
    with EmulatorThread(seed=11, posts=150, image_scale=0.1) as emu:
        yield emu


@pytest.fixture(scope="module")
def reference(small_world, tmp_path_factory) -> Path:
    """The same job, never interrupted."""
    raw = tmp_path_factory.mktemp("reference") / "raw"
    assert scrape(small_world, "danbooru", "", raw) == 0
    return raw


def command(emu, raw: Path, agent: str) -> list[str]:
    """The job; ``agent`` tells the two runs apart in the emulator's request log."""
    return [sys.executable, "-m", "scrape", "--site", "danbooru", "--tags", "", "--out",
            str(raw), "--base-url", emu.site("danbooru"), *FAST, "--user-agent", agent]


def environment() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DANBOORU_", "GELBOORU_"))}


def md5_in(path: str) -> str:
    """The md5 in a Danbooru file path: /danbooru/original/ab/cd/<md5>.<ext>."""
    return path.rsplit("/", 1)[-1].split(".")[0]


def wait_for_images(proc: subprocess.Popen, raw: Path, n: int) -> None:
    """Until ``n`` files are on disk: the emulator served exactly ``n`` and holds the rest, so
    the run cannot finish first, however fast it is."""
    deadline = time.monotonic() + 120
    while len(image_files(raw)) < n:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.02)


def assert_same_as(reference: Path, raw: Path) -> None:
    want, got = by_id(read_rows(reference)), by_id(read_rows(raw))   # by_id: no duplicates
    assert set(got) == set(want)
    assert {pid: r["status"] for pid, r in got.items()} == \
        {pid: r["status"] for pid, r in want.items()}
    assert image_files(raw) == image_files(reference)
    check_images(raw, list(got.values()))
    assert not list((raw / ".tmp").iterdir())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupt_then_rerun_completes_without_downloading_twice(small_world, reference,
                                                                  tmp_path, sig):
    raw = tmp_path / "raw"
    n0 = small_world.emulator.log.total
    small_world.hold_files_after(SERVED)
    proc = subprocess.Popen(command(small_world, raw, "first-run"), cwd=ROOT,
                            env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_for_images(proc, raw, SERVED)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        small_world.release_files()     # the held requests are answered (to a dead client)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert err.strip().splitlines() == ["scrape: interrupted; rerun the same command to "
                                            "finish"]
    else:
        assert proc.returncode == -signal.SIGKILL
    # What the interrupted run left: only complete, verified files under images/.
    present = set()
    for rel in image_files(raw):
        m = IMAGE_PATH.match(rel)
        assert m and md5_of(raw / rel) == m.group(2), rel
        present.add(m.group(2))
    assert len(present) == SERVED
    rows_before = read_rows(raw)
    if sig == signal.SIGINT:    # Ctrl-C flushes: every file on disk has its row
        assert {r["md5"] for r in rows_before if r["status"] == "downloaded"} == present
    done = subprocess.run(command(small_world, raw, "second-run"), cwd=ROOT,
                          env=environment(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_same_as(reference, raw)
    entries = log_since(small_world, n0)   # a held request of the first run may log late
    first = file_gets([e for e in entries if e["agent"] == "first-run"])
    second = file_gets([e for e in entries if e["agent"] == "second-run"])
    assert len(second) == len(image_files(reference)) - SERVED
    assert not {md5_in(p) for p in second} & present        # nothing on disk fetched again
    assert len(second) == len(set(second))
    twice = set(first) & set(second)
    assert all(md5_in(p) not in present for p in twice)     # only what was in flight
    assert len(twice) <= 8                                  # --concurrency 8


def test_a_lost_state_file_is_rebuilt_from_the_parts(small_world, reference, tmp_path):
    """kill -9 between writing a part and registering it, at the extreme: no state at all."""
    raw = tmp_path / "raw"
    shutil.copytree(reference, raw)
    for state in raw.glob("state.sqlite*"):
        state.unlink()
    (raw / ".tmp" / "0123.part").write_bytes(b"left by a killed run")
    n0 = small_world.emulator.log.total
    assert scrape(small_world, "danbooru", "", raw) == 0
    assert file_gets(log_since(small_world, n0)) == []
    assert sorted((raw / "posts").iterdir()) == sorted(
        raw / "posts" / p.name for p in (reference / "posts").iterdir())
    assert_same_as(reference, raw)


def test_images_without_rows_are_not_downloaded_again(small_world, reference, tmp_path):
    """kill -9 before the first flush: files on disk, no rows; the rerun writes the rows."""
    raw = tmp_path / "raw"
    shutil.copytree(reference / "images", raw / "images")
    n0 = small_world.emulator.log.total
    assert scrape(small_world, "danbooru", "", raw) == 0
    assert file_gets(log_since(small_world, n0)) == []
    assert_same_as(reference, raw)
