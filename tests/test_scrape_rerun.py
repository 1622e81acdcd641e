"""Re-runs on one raw/: `--retry-failed` after an outage, and originals after samples.

    .venv/bin/python -m pytest tests/test_scrape_rerun.py -q

A later row of a post supersedes the earlier one (`scraped_at`); prep reads only the latest.
"""

from __future__ import annotations

import pytest
from PIL import Image
from support.scrape_runs import (
    by_id,
    check_images,
    file_gets,
    image_files,
    log_since,
    md5_of,
    read_rows,
    scrape,
    world_posts,
)

from prep.posts_reader import iter_batches, plan_units
from prep.tag_counts import COUNT_COLUMNS, CountSettings, count_tags
from scrape.emulator import EmulatorThread, FaultConfig

QUERY = "fubowa_rino"


def latest_rows(raw) -> dict[int, dict]:
    """Each post's row with the latest scraped_at, as prep should see it."""
    out: dict[int, dict] = {}
    for r in sorted(read_rows(raw), key=lambda r: r["scraped_at"]):
        out[r["id"]] = r
    return out


def prep_rows(raw) -> list[dict]:
    units = plan_units([raw], ("site", "id", "status", "image_path"), ("id",))
    return [r for u in units for b in iter_batches(u) for r in b.to_pylist()]


def test_retry_failed_downloads_exactly_the_failed_posts(emulator, tmp_path):
    raw = tmp_path / "raw"
    emulator.faults.update({"empty": 0.4, "attempts": 0})      # an outage of some files
    assert scrape(emulator, "danbooru", QUERY, raw) == 0
    emulator.faults.__dict__.update(FaultConfig().__dict__)
    first = by_id(read_rows(raw))
    failed = {pid for pid, r in first.items() if r["status"] == "failed_empty"}
    assert failed and any(r["status"] == "downloaded" for r in first.values())

    n0 = emulator.emulator.log.total
    assert scrape(emulator, "danbooru", QUERY, raw) == 0         # failed rows are final...
    assert not file_gets(log_since(emulator, n0)) and len(read_rows(raw)) == len(first)

    n0 = emulator.emulator.log.total
    assert scrape(emulator, "danbooru", QUERY, raw, "--retry-failed") == 0
    fetched = file_gets(log_since(emulator, n0))
    assert sorted(fetched) == sorted(first[pid]["file_url"].split(emulator.url, 1)[1]
                                     for pid in failed)
    rows = read_rows(raw)
    assert len(rows) == len(first) + len(failed)                 # old rows stay, superseded
    latest = latest_rows(raw)
    assert {pid for pid, r in latest.items() if r["status"] == "downloaded"} == {
        pid for pid, r in first.items() if r["status"] in {"downloaded", "failed_empty"}}
    check_images(raw, list(latest.values()))

    seen = prep_rows(raw)                                       # prep: each post once, latest
    assert sorted(r["id"] for r in seen) == sorted(first)
    assert all(r["status"] == latest[r["id"]]["status"] for r in seen)
    units = plan_units([raw], COUNT_COLUMNS, ("tags",))
    counts = count_tags(units, CountSettings(workers=1))
    assert counts.posts.read == len(first)
    assert counts.posts.counted == sum(r["status"] == "downloaded" for r in latest.values())
    top = counts.tags.set_index("name")["count"]
    assert top[QUERY] == counts.posts.counted                    # every post has the query tag


@pytest.fixture(scope="module")
def big_images():
    """About half the posts are wider than 850 px and have samples."""
    with EmulatorThread(seed=3, posts=30, image_scale=0.6) as emu:
        yield emu


@pytest.mark.parametrize("replace", [False, True])
def test_originals_after_samples_on_one_raw(big_images, tmp_path, replace):
    raw = tmp_path / "raw"
    assert scrape(big_images, "danbooru", "", raw, "--variant", "sample") == 0
    samples = {pid: r for pid, r in by_id(read_rows(raw)).items() if r["variant"] == "sample"}
    assert samples
    for r in samples.values():
        assert md5_of(raw / r["image_path"]) != r["md5"]           # the sample's own bytes
        with Image.open(raw / r["image_path"]) as im:
            assert im.format == "JPEG"

    n0 = big_images.emulator.log.total
    extra = ["--replace-samples"] if replace else []
    assert scrape(big_images, "danbooru", "", raw, *extra) == 0
    fetched = file_gets(log_since(big_images, n0))
    assert len(fetched) == len(samples) and all("/original/" in f for f in fetched)
    latest = latest_rows(raw)
    assert set(latest) == {p.id for p in world_posts(big_images.world)}
    assert all(r["variant"] == "original" and r["status"] == "downloaded"
               for r in latest.values())
    for r in latest.values():
        assert md5_of(raw / r["image_path"]) == r["md5"]
    kept = {r["image_path"] for r in samples.values()} & image_files(raw)
    assert kept == (set() if replace else {r["image_path"] for r in samples.values()})
    if replace:
        check_images(raw, list(latest.values()))

    n0 = big_images.emulator.log.total                          # a third run: nothing to do
    assert scrape(big_images, "danbooru", "", raw) == 0
    assert not file_gets(log_since(big_images, n0))
    assert sorted(r["id"] for r in prep_rows(raw)) == sorted(latest)
