"""Benchmark make-shards past one machine: the Ray engine and the upload path vs a local build.

    .venv/bin/python bench/make_shards_scale.py                 # ~3 min on 2 cores
    .venv/bin/python bench/make_shards_scale.py --images 48 --rounds 1   # quick look

Corpus: ``--images`` seeded 1200x900 JPEGs (q90, smooth gradients + grain), in
``--data-dir/corpus/`` (reused), built with the same settings every time: 448 px pad, JPEG q90,
``--samples-per-shard`` 20. Every build runs ``prep make-shards`` in this process, each round in
rotating order, into a fresh folder:

- ``local``: ``--workers N`` (the image pool) into a local folder: the baseline;
- ``ray``: ``--engine ray`` on a local Ray instance of N CPUs started before the timing (a
  cluster is long-lived; its start-up, timed once, is reported on its own);
- ``upload``: the local pool with ``--out s3://bench/ds-K/`` on moto's S3 server on
  127.0.0.1 (needs moto[server] and s3fs): every shard uploaded as it finishes, the manifest last.

Reports images/s (median over rounds) and each contender's ratio to ``local``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prep.cli import main as prep_main  # noqa: E402


def make_corpus(folder: Path, count: int) -> Path:
    """``count`` 1200x900 JPEGs (a gradient plus grain, so they compress like photos)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:900, 0:1200]
    for i in range(count):
        path = folder / f"{i:04d}.jpg"
        if path.exists():
            continue
        base = np.stack([(x * (i + 1)) % 256, (y * 3 + i * 7) % 256, (x + y) % 256], axis=-1)
        grain = rng.integers(-12, 13, size=base.shape)
        pixels = np.clip(base + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
    return folder.parent


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server on a free loopback port, with dummy credentials in the environment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = Path(sys.executable).with_name("moto_server")
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    import s3fs

    s3fs.S3FileSystem().mkdir("bench")
    return process, f"http://127.0.0.1:{port}"


def build(corpus: Path, out: str, args: argparse.Namespace, extra: list[str]) -> float:
    """Seconds of one ``prep make-shards`` run."""
    argv = ["make-shards", "--folder", str(corpus), "--out", out, "--image-size", "448",
            "--samples-per-shard", str(args.samples_per_shard), "--workers", str(args.cpus),
            "-q", *extra]
    started = time.perf_counter()
    if prep_main(argv) != 0:
        raise SystemExit(f"make-shards failed: {' '.join(argv)}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--samples-per-shard", type=int, default=20)
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "bench-scale"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    data = Path(args.data_dir)
    corpus = make_corpus(data / "corpus" / "images", args.images)

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 2**20)
    ray_start = time.perf_counter() - started
    moto, endpoint = start_moto()
    contenders = {
        "local": lambda k: build(corpus, str(data / f"local-{k}"), args, []),
        "ray": lambda k: build(corpus, str(data / f"ray-{k}"), args, ["--engine", "ray"]),
        "upload": lambda k: build(corpus, f"s3://bench/ds-{k}", args,
                                  ["--staging", str(data / f"staging-{k}")]),
    }
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    try:
        build(corpus, str(data / "warm-up"), args, [])  # page cache, imports
        names = list(contenders)
        for k in range(args.rounds):
            for name in names[k % len(names):] + names[:k % len(names)]:
                seconds[name].append(contenders[name](k))
                print(f"round {k} {name}: {seconds[name][-1]:.2f} s", file=sys.stderr)
    finally:
        ray.shutdown()
        moto.kill()
        for path in data.glob("*-*"):
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(data / "warm-up", ignore_errors=True)

    rate = {name: args.images / statistics.median(s) for name, s in seconds.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {args.images} images 1200x900 -> 448 px, "
          f"{args.cpus} CPUs each, {args.rounds} rounds (median)\n")
    print("| build | images/s | ratio to local |\n|---|---|---|")
    for name, value in rate.items():
        print(f"| {name} | {value:.1f} | {value / rate['local']:.2f} |")
    print(f"\nRay start-up (once per cluster): {ray_start:.1f} s; S3 endpoint {endpoint}")


if __name__ == "__main__":
    main()
