"""Shared helpers of the scrape tests (no tests here): run the scraper, read raw/, read the log.

    from support.scrape_runs import scrape, read_rows, check_images, log_since
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from aiohttp import web

from scrape.cli import main
from scrape.emulator import vocab as V

FAST = ["--rate", "0", "--backoff", "0.01", "-q"]
IMAGE_EXTS = {"jpg", "png", "gif", "webp"}
IMAGE_PATH = re.compile(
    r"^images/([0-9a-f]{2})/([0-9a-f]{32})(-sample)?\.(jpg|png|gif|webp|avif|bmp)$")
CATEGORY = {"general": V.GENERAL, "artist": V.ARTIST, "copyright": V.COPYRIGHT,
            "character": V.CHARACTER, "meta": V.META}
WORDS = {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}
TAGS = pa.list_(pa.string())
SCHEMA = {   # docs/DESIGN.md, "Boundary 1: scrape output (raw/)"
    "site": pa.string(), "id": pa.int64(), "md5": pa.string(), "file_ext": pa.string(),
    "file_url": pa.string(), "source": pa.string(), "rating": pa.string(),
    "score": pa.int64(), "width": pa.int64(), "height": pa.int64(), "file_size": pa.int64(),
    "created_at": pa.timestamp("us", tz="UTC"), "tags": TAGS, "tags_general": TAGS,
    "tags_character": TAGS, "tags_copyright": TAGS, "tags_artist": TAGS, "tags_meta": TAGS,
    "image_path": pa.string(), "status": pa.string(), "error": pa.string(),
    "variant": pa.string(), "scraped_at": pa.timestamp("us", tz="UTC"),
}


def scrape(emu, site: str, tags: str, out: Path, *extra: str) -> int:
    """Run `scrape` in-process against the emulator's `site`; `extra` flags win over FAST."""
    return main(["--site", site, "--tags", tags, "--out", str(out),
                 "--base-url", emu.site(site), *FAST, *extra])


def read_table(raw: Path) -> pa.Table | None:
    if not list((raw / "posts").glob("*.parquet")):
        return None
    return pq.read_table(raw / "posts")


def read_rows(raw: Path) -> list[dict]:
    table = read_table(raw)
    return [] if table is None else table.to_pylist()


def by_id(rows: list[dict]) -> dict[int, dict]:
    out = {r["id"]: r for r in rows}
    assert len(out) == len(rows), "duplicate ids"
    return out


def image_files(raw: Path) -> set[str]:
    """Every file under raw/images, relative to raw/."""
    folder = raw / "images"
    if not folder.exists():
        return set()
    return {p.relative_to(raw).as_posix() for p in folder.rglob("*") if p.is_file()}


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def check_images(raw: Path, rows: list[dict], originals: bool = True) -> None:
    """Every downloaded row has its verified file; images/ holds nothing else."""
    wanted = set()
    for r in rows:
        if r["status"] != "downloaded":
            assert r["image_path"] is None, r
            continue
        m = IMAGE_PATH.match(r["image_path"] or "")
        assert m, r["image_path"]
        assert m.group(2) == r["md5"] and m.group(1) == r["md5"][:2]
        assert m.group(4) == r["file_ext"]
        assert r["variant"] == ("sample" if m.group(3) else "original"), r
        if originals or not m.group(3):
            assert md5_of(raw / r["image_path"]) == r["md5"], r["id"]
        wanted.add(r["image_path"])
    assert image_files(raw) == wanted


def world_posts(world, tag: str | None = None) -> list:
    """Posts of the world (every status), newest first; only those with `tag` if given."""
    if tag is None:
        return list(world.scan(lambda blk: np.ones(len(blk.ids), bool)))
    index = world.vocab.index(tag)
    assert index is not None, tag
    return list(world.scan(lambda blk: (blk.tags == index).any(axis=1)))


def stored_ext(post) -> str:
    """The extension the bytes of a world post's original really have."""
    if post.mislabeled:
        return {"jpg": "png", "png": "jpg"}[post.file_ext]
    return post.file_ext


def log_since(emu, n0: int) -> list[dict]:
    """Request-log entries after entry number n0, in arrival order."""
    return sorted((e for e in emu.emulator.log.entries if e["n"] > n0), key=lambda e: e["t"])


def is_file(entry: dict) -> bool:
    name = entry["path"].rsplit("/", 1)[-1]
    return "." in name and not name.endswith((".json", ".xml", ".php"))


def file_gets(entries: list[dict]) -> list[str]:
    return [e["path"] for e in entries if is_file(e)]


class LocalServer:
    """An aiohttp application on 127.0.0.1 in a daemon thread: `with LocalServer(app) as s`."""

    def __init__(self, app: web.Application):
        self.app = app
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> LocalServer:
        self._thread.start()
        assert self._ready.wait(10), "the test server did not start"
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
