"""Scraper throughput against the emulator on loopback, beside a naive sequential client and,
at both tools' defaults, beside gallery-dl.

    .venv/bin/python bench/scrape.py [--posts 1200] [--scale 1.0] [--rate 120]
    .venv/bin/python bench/scrape.py --part defaults [--defaults-posts 400] [--rounds 2]

One emulator (a thread of this process) serves a Danbooru world; every client runs in its
own process, one after the other, each into a fresh raw/ folder:
  naive      a sequential loop: list a page, download each file, write it (urllib)
  scrape     `scrape` with no rate limit, 16 concurrent downloads
  +latency   both again with every answer delayed by --latency seconds (a real network)
  limited    the emulator enforces --rate requests/s (429 above it; burst 60, half a second
             as on Danbooru's edge) and `scrape` runs with the same --rate (burst 10):
             the request rate it holds against that limit, and the 429s it gets
Part "defaults" (issue 17): a second emulator lists its files on a second address (a "CDN"
host, as the real sites do) and delays every answer by --latency; `scrape` and gallery-dl
(where installed) each run at their default settings, in alternating order for --rounds
rounds, and every file they wrote is checked against the md5 the API listed. It also reports
each process's start-up: the time from spawning it to the emulator's first request from it.
The world's files are rendered once before timing (listing renders them to report md5s),
so the numbers measure the clients, not the renderer.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

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
    ap.add_argument("--part", choices=["all", "throughput", "defaults"], default="all",
                    help="which measurements to run (default: all)")
    ap.add_argument("--posts", type=int, default=1200, help="posts in the throughput world (1200)")
    ap.add_argument("--scale", type=float, default=1.0, help="image scale (1.0: ~100 KB)")
    ap.add_argument("--rate", type=float, default=120.0,
                    help="the emulator's per-client limit for the 'limited' run (120)")
    ap.add_argument("--latency", type=float, default=0.05,
                    help="seconds added to every answer in the +latency and defaults runs (0.05)")
    ap.add_argument("--defaults-posts", type=int, default=400,
                    help="posts in the defaults world, scrape vs gallery-dl (400)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="defaults runs per tool, in alternating order; the median counts (2)")
    ap.add_argument("--gallery-dl", default=None,
                    help="the gallery-dl executable (default: next to this Python, else PATH)")
    args = ap.parse_args()
    if args.part in ("all", "throughput"):
        throughput(args)
    if args.part in ("all", "defaults"):
        defaults(args)


def throughput(args: argparse.Namespace) -> None:
    """Naive loop vs scrape without limits, with latency, and against a rate limit."""
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


# -- defaults: scrape vs gallery-dl, files on a second address, latency on every answer ----
GALLERY_DL_IMAGES = "extension in ('jpg', 'png', 'gif', 'webp')"   # what scrape keeps


def gallery_dl_exe(given: str | None) -> str | None:
    if given:
        return shutil.which(given)
    near = Path(sys.executable).with_name("gallery-dl")
    return str(near) if near.exists() else shutil.which("gallery-dl")


def defaults(args: argparse.Namespace) -> None:
    """Both tools at their default settings against one emulator; every file checked."""
    exe = gallery_dl_exe(args.gallery_dl)
    if exe is None:
        print(f"gallery-dl: skipped ({args.gallery_dl or 'gallery-dl'} is not installed; "
              "`pip install gallery-dl` to compare)")
    with EmulatorThread(seed=0, posts=args.defaults_posts, image_scale=args.scale,
                        files_host=True) as emu, tempfile.TemporaryDirectory() as tmp:
        base = emu.site("danbooru")
        t = time.perf_counter()                            # renders every file, fills the md5s
        listed = int(subprocess.run([sys.executable, "-c", NAIVE, base, tmp], check=True,
                                    capture_output=True, text=True).stdout)
        print(f"defaults: {listed} image posts, files on {emu.emulator.files_url}, "
              f"{args.latency * 1000:g} ms per answer; warm-up {time.perf_counter() - t:.1f} s")
        emu.faults.update({"slow": 1.0, "slow_seconds": args.latency, "attempts": 0})
        config = Path(tmp) / "gallery-dl.json"             # the emulator as a Danbooru instance
        config.write_text(json.dumps({"extractor": {"Danbooru": {"emulator": {"root": base}}}}))
        commands = {"scrape": lambda out: [
            sys.executable, "-m", "scrape", "--site", "danbooru", "--tags", "", "--out",
            str(out), "--base-url", base, "-q"]}
        if exe:
            commands["gallery-dl"] = lambda out: [
                exe, "--config-ignore", "-c", str(config), "-D", str(out), "-q",
                "--filter", GALLERY_DL_IMAGES, f"{base}/posts?tags="]
        results: dict[str, list[tuple]] = {name: [] for name in commands}
        for r in range(args.rounds):
            for name in (list(commands) if r % 2 == 0 else list(commands)[::-1]):
                out = Path(tmp) / f"{name}-{r}"
                out.mkdir()
                results[name].append(timed_run(emu, commands[name](out), name, out))
    report_defaults(results, listed)


def timed_run(emu: EmulatorThread, cmd: list[str], name: str, out: Path) -> tuple:
    """(verified images, bad files, seconds, seconds from spawn to the first request, CPU s)."""
    since = emu.emulator.log.total
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    spawned = time.time()
    seconds = run(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    first = next((e["t"] for e in emu.emulator.log.entries if e["n"] > since), float("nan"))
    good, bad = (verify_scrape if name == "scrape" else verify_gallery_dl)(emu, out)
    return good, bad, seconds, first - spawned, cpu


def _original_md5(emu: EmulatorThread, post_id: int) -> str | None:
    post = emu.world.post(post_id)
    return None if post is None else emu.emulator.store.md5(post)


def verify_scrape(emu: EmulatorThread, raw: Path) -> tuple[int, int]:
    """Rows `downloaded` whose file's md5 is the md5 of that post's original."""
    good = bad = 0
    for r in pq.read_table(raw / "posts").to_pylist():
        if r["status"] != "downloaded":
            continue
        digest = hashlib.md5((raw / r["image_path"]).read_bytes()).hexdigest()
        ok = digest == r["md5"] == _original_md5(emu, r["id"])
        good, bad = good + ok, bad + (not ok)
    return good, bad


def verify_gallery_dl(emu: EmulatorThread, folder: Path) -> tuple[int, int]:
    """Files `emulator_<id>_<md5>.<ext>` whose md5 is the md5 of that post's original."""
    good = bad = 0
    for path in folder.iterdir():
        _, post_id, name = path.stem.split("_", 2)
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        ok = digest == name == _original_md5(emu, int(post_id))
        good, bad = good + ok, bad + (not ok)
    return good, bad


def report_defaults(results: dict[str, list[tuple]], listed: int) -> None:
    print(f"{'tool':11s} {'round':>5s} {'images':>6s} {'bad':>4s} {'s':>6s} {'images/s':>9s} "
          f"{'first request s':>15s} {'CPU s':>6s}")
    speed = {}
    for name, runs in results.items():
        for r, (good, bad, seconds, first, cpu) in enumerate(runs):
            print(f"{name:11s} {r:5d} {good:6d} {bad:4d} {seconds:6.2f} {good / seconds:9.1f} "
                  f"{first:15.3f} {cpu:6.2f}")
        speed[name] = statistics.median(good / seconds for good, _, seconds, *_ in runs)
        start = statistics.median(first for *_, first, _ in runs)
        print(f"{name:11s} median {speed[name]:.1f} images/s, first request after {start:.3f} s"
              f" ({listed} image posts listed)")
    if "gallery-dl" in speed:
        ratio = speed["scrape"] / speed["gallery-dl"]
        print(f"scrape / gallery-dl: {ratio:.2f}x images/s (goal >= 3x: "
              f"{'met' if ratio >= 3 else 'NOT met'})")


if __name__ == "__main__":
    main()
