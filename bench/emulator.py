"""How fast the emulator serves images: the ceiling for the scraper benchmark (issue 3).

    .venv/bin/python bench/emulator.py [--posts 600] [--scale 0.35] [--concurrency 16]

Three timings in one run, with the same aiohttp client:
  list    Danbooru listing pages of a fresh world; the emulator renders every original here
          to know its md5, so this is the render cost (posts/s)
  files   every listed original file, served from the emulator's cache
  static  the same bytes from disk through aiohttp's static file handler (the baseline)
and prints images/s and MB/s, and the files/static ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from scrape.emulator import EmulatorThread

AGENT = "booru-tagger-bench/0.1"


async def list_urls(base: str, n: int) -> list[str]:
    urls, page = [], "b999999999"
    async with aiohttp.ClientSession(headers={"User-Agent": AGENT}) as s:
        while len(urls) < n:
            async with s.get(f"{base}/posts.json", params={"limit": 200, "page": page}) as r:
                batch = await r.json()
            if not batch:
                break
            urls += [p["file_url"] for p in batch if "file_url" in p]
            page = f"b{batch[-1]['id']}"
    return urls[:n]


async def fetch_all(urls: list[str], concurrency: int) -> tuple[float, int]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for u in urls:
        queue.put_nowait(u)
    total = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal total
        while not queue.empty():
            url = queue.get_nowait()
            async with session.get(url) as r:
                total += len(await r.read())

    start = time.perf_counter()
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, headers={"User-Agent": AGENT}) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    return time.perf_counter() - start, total


async def static_server(urls: list[str], root: Path) -> tuple[web.AppRunner, list[str]]:
    app = web.Application()
    app.router.add_static("/files", root)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, [f"http://127.0.0.1:{port}/files/{Path(u).name}" for u in urls]


async def save(urls: list[str], root: Path) -> None:
    async with aiohttp.ClientSession(headers={"User-Agent": AGENT}) as s:
        for u in urls:
            async with s.get(u) as r:
                (root / Path(u).name).write_bytes(await r.read())


def report(name: str, seconds: float, nbytes: int, n: int) -> float:
    rate = n / seconds
    print(f"{name:7s} {n} files  {seconds:6.2f} s  {rate:7.1f} images/s  "
          f"{nbytes / seconds / 1e6:6.1f} MB/s  {nbytes / n / 1024:6.0f} KB/file")
    return rate


async def main_async(args: argparse.Namespace) -> None:
    with EmulatorThread(seed=0, posts=args.posts, image_scale=args.scale) as emu:
        start = time.perf_counter()
        urls = await list_urls(emu.site("danbooru"), args.posts)
        listed = time.perf_counter() - start
        print(f"list    {len(urls)} posts  {listed:6.2f} s  {len(urls) / listed:7.1f} posts/s "
              "(rendering included)")
        warm = report("files", *await fetch_all(urls, args.concurrency), len(urls))
        with tempfile.TemporaryDirectory() as tmp:
            await save(urls, Path(tmp))
            runner, static_urls = await static_server(urls, Path(tmp))
            try:
                static = report("static", *await fetch_all(static_urls, args.concurrency),
                                len(urls))
            finally:
                await runner.cleanup()
    print(f"files/static {warm / static:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=int, default=600)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="image scale; 1.0 gives files of about 100 KB on average")
    ap.add_argument("--concurrency", type=int, default=16)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
