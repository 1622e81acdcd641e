"""Scraper throughput against the emulator on loopback, beside a naive sequential client.

    .venv/bin/python bench/scrape.py [--posts 1200] [--scale 1.0] [--rate 120]

One emulator (a thread of this process) serves a Danbooru world; every client runs in its
own process, one after the other, each into a fresh raw/ folder:
  naive      a sequential loop: list a page, download each file, write it (urllib)
  scrape     `scrape` with no rate limit, 16 concurrent downloads
  +latency   both again with every answer delayed by --latency seconds (a real network)
  limited    the emulator enforces --rate requests/s (429 above it; burst 60, half a second
             as on Danbooru's edge) and `scrape` runs with the same --rate (burst 10):
             the request rate it holds against that limit, and the 429s it gets
The world's files are rendered once before timing (listing renders them to report md5s),
so the numbers measure the clients, not the renderer.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named like the package it measures: keep bench/ off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
from scrape.emulator import EmulatorThread  # noqa: E402

NAIVE = r"""
import json, sys, urllib.request, pathlib
base, out = sys.argv[1], pathlib.Path(sys.argv[2])
H = {"User-Agent": "naive-bench/1.0"}
def get(url):
    with urllib.request.urlopen(urllib.request.Request(url, headers=H)) as r:
        return r.read()
page, n = "b999999999", 0
while True:
    batch = json.loads(get(f"{base}/posts.json?limit=200&page={page}"))
    if not batch:
        break
    for p in batch:
        if "file_url" in p and p["file_ext"] in ("jpg", "png", "gif", "webp"):
            (out / f"{p['md5']}.{p['file_ext']}").write_bytes(get(p["file_url"]))
            n += 1
    page = f"b{batch[-1]['id']}"
print(n)
"""


def run(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def images_in(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix in
             {".jpg", ".png", ".gif", ".webp"}]
    return len(files), sum(p.stat().st_size for p in files)


def scrape_cmd(base: str, out: Path, rate: float, burst: int) -> list[str]:
    return [sys.executable, "-m", "scrape", "--site", "danbooru", "--tags", "", "--out",
            str(out), "--base-url", base, "--rate", str(rate), "--burst", str(burst),
            "--concurrency", "16", "-q"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=int, default=1200)
    ap.add_argument("--scale", type=float, default=1.0, help="image scale (1.0: ~100 KB)")
    ap.add_argument("--rate", type=float, default=120.0,
                    help="the emulator's per-client limit for the 'limited' run")
    ap.add_argument("--latency", type=float, default=0.05,
                    help="seconds added to every answer in the +latency runs")
    args = ap.parse_args()
    with EmulatorThread(seed=0, posts=args.posts, image_scale=args.scale) as emu, \
            tempfile.TemporaryDirectory() as tmp:
        base = emu.site("danbooru")
        t = run([sys.executable, "-c", NAIVE, base, tmp])          # warms the file cache
        print(f"warm-up (rendering) {t:.1f} s")
        rows = []
        runs = [("naive", 0.0, 0.0), ("scrape", 0.0, 0.0), ("naive+latency", args.latency, 0.0),
                ("scrape+latency", args.latency, 0.0), ("limited", 0.0, args.rate)]
        for name, latency, limit in runs:
            out = Path(tmp) / name
            out.mkdir()
            since = emu.emulator.log.total
            emu.faults.update({"slow": 1.0 if latency else 0.0, "slow_seconds": latency,
                               "attempts": 0, "rate_limit": limit, "burst": 60})
            if name.startswith("naive"):
                seconds = run([sys.executable, "-c", NAIVE, base, str(out)])
            else:
                seconds = run(scrape_cmd(base, out, limit, 10))
            n, size = images_in(out)
            entries = [e for e in emu.emulator.log.entries if e["n"] > since]
            too_many = sum(e["status"] == 429 for e in entries)
            span = entries[-1]["t"] - entries[0]["t"] if len(entries) > 1 else seconds
            rows.append((name, n, seconds, size, len(entries), too_many, span))
    print(f"{'client':14s} {'images':>6s} {'s':>6s} {'images/s':>9s} {'req/s':>7s} "
          f"{'KB/img':>7s} {'429s':>5s} {'vs naive':>8s}")
    naive = {name: n / seconds for name, n, seconds, *_ in rows if name.startswith("naive")}
    for name, n, seconds, size, requests, too_many, _ in rows:
        base_rate = naive["naive+latency" if "latency" in name else "naive"]
        print(f"{name:14s} {n:6d} {seconds:6.2f} {n / seconds:9.1f} {requests / seconds:7.1f} "
              f"{size / max(n, 1) / 1024:7.0f} {too_many:5d} {n / seconds / base_rate:8.2f}")
    name, n, seconds, size, requests, too_many, span = rows[-1]
    print(f"limited: {requests / span:.1f} requests/s from first to last request against a "
          f"limit of {args.rate:g} ({requests / span / args.rate:.1%}), {too_many} 429s; "
          f"{requests / seconds:.1f} requests/s counting process start-up")


if __name__ == "__main__":
    main()
