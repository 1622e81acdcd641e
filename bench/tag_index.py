"""Benchmark ``prep make-tag-index`` against a plain pandas explode/value_counts baseline.

    .venv/bin/python bench/tag_index.py             # 10M posts; side by side at 1M, 5M, 10M
    .venv/bin/python bench/tag_index.py --posts 200000 --baseline-posts 200000   # quick run

Generates a synthetic posts table like ``raw/posts/*.parquet`` (parts of 500k posts, row groups
of 100k; ``tags`` plus ``tags_<category>`` lists, ``rating``, ``status`` with 90% downloaded;
about 25 distinct tags per post drawn from a Zipf-like vocabulary of 200k tags, p(rank r) ~
1/(r+2)) into a temporary directory (or ``--data-dir``, reused when it already holds the same
data). Then, for every size in ``--baseline-posts`` and for the full size, runs each contender
in its own subprocess and records wall seconds and peak RSS (``os.wait4`` rusage, ru_maxrss):

- ``prep``: ``python -m prep make-tag-index --posts <parts> --out tags.csv -q`` (two streaming
  passes: counts with categories, then post coverage; writes CSV, JSON report and PNG);
- ``pandas``: ``pd.read_parquet(parts, columns=["tags", "status"])``, keep downloaded posts,
  ``.explode("tags").value_counts()``; no categories, no coverage. It is killed when its RSS
  passes ``--baseline-mem-gb`` or it runs past ``--baseline-timeout``.

Where both finish, the counts of the tags in prep's ``tags.csv`` are checked against the baseline.
Prints a Markdown table and writes the results as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

VOCAB = 200_000
MEAN_DRAWS = 27  # draws per post before removing duplicates: about 25 distinct tags
PART_POSTS = 500_000
GROUP_POSTS = 100_000
CATEGORIES = ("general", "character", "copyright", "artist", "meta")
RATINGS = np.array(["general", "sensitive", "questionable", "explicit"])
ROOT = Path(__file__).resolve().parent.parent

BASELINE = """
import sys, pandas as pd
df = pd.read_parquet(sys.argv[2:], columns=["tags", "status"])
df = df[df["status"] == "downloaded"]
counts = df["tags"].explode().value_counts()
counts.rename_axis("name").rename("count").reset_index().to_parquet(sys.argv[1])
"""


def _world(seed: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Vocabulary (shuffled against rank), cumulative rank probabilities, category per rank."""
    rng = np.random.default_rng(seed)
    letters = np.array(list(string.ascii_lowercase))
    words = sorted({"".join(rng.choice(letters, size=n)) for n in rng.integers(3, 11, 6000)})
    w = len(words)
    names = [words[i] if i < w else f"{words[i % w]}_{words[(i // w) % w]}" for i in range(VOCAB)]
    vocab = pa.array([names[i] for i in rng.permutation(VOCAB)])
    p = 1.0 / (np.arange(1, VOCAB + 1) + 2.0)
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0
    cats = rng.choice(len(CATEGORIES), size=VOCAB, p=[0.70, 0.15, 0.06, 0.08, 0.01])
    cats[:200] = 0  # the most frequent tags are general ones, as on real boorus
    return vocab, cdf, cats


def _chunk(rng: np.random.Generator, n: int, first_id: int, world) -> pa.Table:
    vocab, cdf, cats = world
    post = np.repeat(np.arange(n, dtype=np.int64), rng.poisson(MEAN_DRAWS, size=n))
    key = np.sort(post * VOCAB + np.searchsorted(cdf, rng.random(post.size)))
    key = key[np.r_[True, key[1:] != key[:-1]]]  # distinct tags per post
    post, tag = key // VOCAB, key % VOCAB

    def lists(mask) -> pa.Array:
        offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(post[mask], minlength=n), out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), vocab.take(tag[mask]))

    columns = {
        "id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
        "rating": pa.array(RATINGS[rng.choice(4, size=n, p=[0.5, 0.3, 0.1, 0.1])]),
        "status": pa.array(np.where(rng.random(n) < 0.9, "downloaded", "skipped_filtered")),
        "tags": lists(slice(None)),
    }
    tag_cat = cats[tag]
    for code, name in enumerate(CATEGORIES):
        columns[f"tags_{name}"] = lists(tag_cat == code)
    return pa.table(columns)


def _write_part(args: tuple[Path, int, int, int]) -> Path:
    out, index, n, seed = args
    world = _world(seed)
    rng = np.random.default_rng([seed, index])
    path = out / f"part-{index:05d}.parquet"
    tmp = path.with_suffix(".tmp")
    writer = None
    for start in range(0, n, GROUP_POSTS):
        table = _chunk(rng, min(GROUP_POSTS, n - start), index * PART_POSTS + start, world)
        writer = writer or pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table)
    writer.close()
    tmp.rename(path)
    return path


def generate(out: Path, posts: int, seed: int, jobs: int) -> list[Path]:
    """Write ``posts`` synthetic posts as parquet parts into ``out`` (reused if already there)."""
    stamp = out / "DATA.json"
    want = {"posts": posts, "seed": seed, "vocab": VOCAB, "part_posts": PART_POSTS}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return sorted(out.glob("part-*.parquet"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    sizes = [min(PART_POSTS, posts - i) for i in range(0, posts, PART_POSTS)]
    with ProcessPoolExecutor(jobs) as pool:
        parts = list(pool.map(_write_part, [(out, i, n, seed) for i, n in enumerate(sizes)]))
    stamp.write_text(json.dumps(want))
    return parts


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def measure(cmd: list[str], timeout: float, mem_gb: float | None = None) -> dict:
    """Run ``cmd``; return seconds, peak RSS (MiB) and exit status.

    The child is killed when it runs past ``timeout`` or (polled every 0.1 s) its resident
    memory exceeds ``mem_gb``, so an out-of-memory baseline fails cleanly instead of pushing
    the machine into the kernel's OOM killer.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    why: list[str] = []

    def watch() -> None:
        while proc.returncode is None:
            if time.perf_counter() - started > timeout:
                why.append(f"timeout after {timeout:.0f} s")
            elif mem_gb and _rss_bytes(proc.pid) > mem_gb * 2**30:
                why.append(f"killed at {mem_gb:g} GiB RSS")
            if why:
                proc.kill()
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    watcher.join()
    result = {"seconds": round(time.perf_counter() - started, 2),
              "peak_rss_mib": round(usage.ru_maxrss / 1024), "exit": proc.returncode}
    if proc.returncode != 0:
        result["error"] = why[0] if why else (err.strip().splitlines() or ["?"])[-1][:120]
    return result


def _check(prep_csv: Path, baseline: Path) -> str:
    import pandas as pd

    ours = pd.read_csv(prep_csv, keep_default_na=False)
    ref = pd.read_parquet(baseline).set_index("name")["count"]
    bad = (ours["count"].to_numpy() != ref.reindex(ours["name"]).to_numpy()).sum()
    return "counts agree" if bad == 0 else f"{bad} counts differ"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--posts", type=int, default=10_000_000, help="posts to generate")
    ap.add_argument("--baseline-posts", type=int, nargs="*",
                    default=[1_000_000, 5_000_000, 10_000_000],
                    help="sizes (multiples of 500k, or the full size) to run side by side")
    ap.add_argument("--baseline-timeout", type=float, default=600.0)
    ap.add_argument("--baseline-mem-gb", type=float, default=16.0,
                    help="kill the baseline when its RSS exceeds this (default: %(default)s)")
    ap.add_argument("--data-dir", type=Path, help="keep the generated data here (reused)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-tag-index-"))
    data = args.data_dir or tmp / "posts"
    try:
        t0 = time.perf_counter()
        parts = generate(data, args.posts, args.seed, os.cpu_count() or 1)
        gen_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in parts)
        print(f"data: {args.posts} posts, {len(parts)} parts, {size / 2**30:.2f} GiB, "
              f"ready in {gen_s:.0f} s", flush=True)
        results = []
        side_by_side = {min(n, args.posts) for n in args.baseline_posts}
        for n in sorted(side_by_side | {args.posts}):
            subset = [str(p) for p in parts[: -(-n // PART_POSTS)]]
            out = tmp / f"run-{n}"
            out.mkdir()
            ours = measure([sys.executable, "-m", "prep", "make-tag-index", "--posts", *subset,
                            "--out", str(out / "tags.csv"), "-q"], timeout=3600)
            row = {"posts": n, "prep": ours}
            if n in side_by_side:
                ref = measure([sys.executable, "-c", BASELINE, str(out / "ref.parquet"),
                               *subset], args.baseline_timeout, args.baseline_mem_gb)
                row["pandas"] = ref
                if ours["exit"] == 0 and ref["exit"] == 0:
                    row["check"] = _check(out / "tags.csv", out / "ref.parquet")
            results.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, "
               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
               f"Python {platform.python_version()}, pyarrow {pa.__version__}")
    print(f"\nmachine: {machine}\n")
    print("| posts | prep s | prep peak RSS MiB | pandas s | pandas peak RSS MiB | check |")
    print("|---:|---:|---:|---:|---:|---|")
    for r in results:
        p, b = r["prep"], r.get("pandas")
        ref = (f"{b['seconds']} | {b['peak_rss_mib']}" if b and b["exit"] == 0
               else f"failed: {b['error']} | {b['peak_rss_mib']}" if b else "- | -")
        print(f"| {r['posts']:,} | {p['seconds']} | {p['peak_rss_mib']} | {ref} | "
              f"{r.get('check', '-')} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "generate_s": round(gen_s, 1),
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
