"""Files on a second address, as real sites list a CDN host: their own rate budget.

    .venv/bin/python -m pytest tests/test_scrape_file_host.py -q
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import pytest
from support.clock import FakeClock
from support.scrape_runs import check_images, read_rows, scrape

from scrape.emulator import EmulatorThread
from scrape.http import Client
from scrape.sites import SITES as ADAPTERS

SITES = list(ADAPTERS)


@pytest.fixture(scope="module")
def cdn():
    with EmulatorThread(seed=11, posts=40, image_scale=0.1, files_host=True) as emu:
        yield emu


@pytest.mark.parametrize("site", SITES)
def test_files_listed_on_the_second_address_are_scraped(cdn, tmp_path, site):
    files = cdn.emulator.files_url
    assert files and urlsplit(files).netloc != urlsplit(cdn.url).netloc
    assert scrape(cdn, site, "", tmp_path) == 0
    rows = read_rows(tmp_path)
    done = [r for r in rows if r["status"] == "downloaded"]
    assert done and all(r["file_url"].startswith(files + "/") for r in done)
    check_images(tmp_path, rows)


def test_file_requests_take_the_file_budget_not_the_api_budget(cdn, tmp_path):
    assert scrape(cdn, "danbooru", "", tmp_path, "--metadata-only") == 0
    urls = [r["file_url"] for r in read_rows(tmp_path) if r["file_url"]][:6]
    api = f"{cdn.site('danbooru')}/posts.json?limit=1"

    async def go() -> tuple[list[float], list[float]]:
        clock = FakeClock()
        async with Client("booru-tagger-tests/1.0", rate=1, burst=1, file_rate=None,
                          api_hosts=frozenset({urlsplit(cdn.url).netloc}), clock=clock) as c:
            for url in urls:
                assert (await c.get(url)).status == 200
            file_sleeps = list(clock.sleeps)
            for _ in range(3):
                assert (await c.get(api)).status == 200
            return file_sleeps, clock.sleeps[len(file_sleeps):]

    file_sleeps, api_sleeps = asyncio.run(go())
    assert len(urls) == 6 and file_sleeps == []             # files: no API budget spent
    assert sum(api_sleeps) == pytest.approx(2.0)            # the API: 1/s after a burst of 1
