"""Benchmark the image path of ``prep make-shards`` against plain Pillow and img2dataset.

    .venv/bin/python bench/make_shards.py --data-dir /tmp/bench-shards \\
        --img2dataset-python /tmp/i2d-venv/bin/python      # ~4 min on 2 cores
    .venv/bin/python bench/make_shards.py --images 24 --rounds 1   # quick look

Corpus: ``--images`` generated booru-like illustrations (seeded), 3/4 JPEG q90 (4:2:0, some
4:4:4 and progressive, with luma grain) and 1/4 PNG (RGB, RGBA with soft alpha, palette with
transparency), long side 1000-4000 px, written to ``--data-dir/illustrations/`` (reused when
it already holds them) by two processes.

Single core (the process pins itself to one CPU; each image is timed in CPU seconds,
``time.process_time``, so other work on a shared machine costs less accuracy than wall time
would), interleaved over ``--rounds`` in rotating order, the same files, target 448 pad
(longest side 448 on a white square), JPEG q90 4:2:0:

- ``plain Pillow``: ``Image.open`` + full decode + RGB (alpha onto white) + LANCZOS to the
  target + pad + encode: the loop one writes without thinking about speed;
- ``prep (Pillow draft)``: ``prep.imaging.process_image`` with ``jpeg_decoder="pillow"``;
- ``prep (simplejpeg)``: the same with the default ``jpeg_decoder="simplejpeg"``;
- ``img2dataset``: ``img2dataset.resizer.Resizer(image_size=448, resize_mode="border",
  encode_quality=90)`` (cv2 decode, INTER_AREA) run by ``--img2dataset-python``, an
  interpreter of a separate venv with img2dataset installed (skipped without one).

Quality: PSNR of each contender's decoded output file against a float32 LANCZOS resize of the
full decode (same geometry), over the picture area, for the first ``--psnr-images`` files.
End to end: ``python -m prep make-shards --folder`` on the corpus with ``--workers 1`` and
``--workers 2``: wall time and CPU time (user + system of the command and its workers; Python
start-up, md5 of the files, planning and writing included), so images per CPU second is the
rate per core when the cores are free. Prints Markdown tables; ``--json`` saves the numbers.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prep.imaging import ImageSettings, plan_geometry, process_image  # noqa: E402

SIZE = 448
QUALITY = 90

I2D_SCRIPT = r"""
import io, json, os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
import cv2
cv2.setNumThreads(1)
from img2dataset.resizer import Resizer
files, out_dir, psnr_n = json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
resizer = Resizer(image_size=448, resize_mode="border", resize_only_if_bigger=False,
                  encode_format="jpg", encode_quality=90)
result = []
for i, path in enumerate(files):
    data = open(path, "rb").read()
    start = time.process_time()
    img, *_, err = resizer(io.BytesIO(data))
    seconds = time.process_time() - start
    if err:
        raise SystemExit(f"{path}: {err}")
    if i < psnr_n:
        open(os.path.join(out_dir, f"{i}.jpg"), "wb").write(img)
    result.append([seconds, len(img)])
print(json.dumps(result))
"""


def illustration(rng: np.random.Generator, w: int, h: int, grain: bool) -> Image.Image:
    """Gradient + noise background, outlined shapes, hatching, optional luma grain."""
    small = (max(8, w // 8), max(8, h // 8))
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, small[1], dtype=np.float32)[:, None, None]
    base = c0 * (1 - t) + c1 * t + rng.normal(0, 18, (small[1], small[0], 3))
    im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(im)
    unit = min(w, h)
    for _ in range(int(rng.integers(6, 16))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), unit * rng.uniform(0.05, 0.25)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        box, line = (cx - r, cy - r, cx + r, cy + r), max(2, unit // 250)
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse(box, fill=colour, outline=(20, 20, 20), width=line)
        elif kind == 1:
            draw.rectangle(box, fill=colour, outline=(20, 20, 20), width=line)
        else:
            points = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in rng.uniform(0, 6.3, 5)]
            draw.polygon(points, fill=colour, outline=(20, 20, 20))
    step, x0, y0 = max(6, unit // 120), rng.uniform(0, w * 0.6), rng.uniform(0, h * 0.6)
    for k in range(0, int(unit * 0.3), step):
        draw.line((x0 + k, y0, x0 + k + unit * 0.2, y0 + unit * 0.2), fill=(40, 40, 60))
    if grain:
        noisy = np.asarray(im, dtype=np.int16) + rng.normal(0, 5, (h, w, 1)).astype(np.int16)
        im = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    return im


def make_file(args: tuple[Path, int, int]) -> Path:
    folder, i, seed = args
    rng = np.random.default_rng([seed, i])
    long = int(rng.uniform(1000, 4000))
    aspect = float(rng.choice([1.0, 0.75, 4 / 3, 0.707, 1.414, 9 / 16, 16 / 9]))
    w, h = (long, int(long / aspect)) if aspect >= 1 else (int(long * aspect), long)
    out = io.BytesIO()
    if i % 4 < 3:
        im = illustration(rng, w, h, grain=True)
        im.save(out, "JPEG", quality=90, subsampling=("4:2:0", "4:2:0", "4:4:4")[i % 3],
                progressive=i % 7 == 0)
        path = folder / f"{i:04d}.jpg"
    else:
        im = illustration(rng, w, h, grain=False)
        kind = (i // 4) % 3
        if kind == 1:
            alpha = Image.new("L", (w, h), 255)
            ImageDraw.Draw(alpha).ellipse((w * 0.1, h * 0.1, w * 0.9, h * 0.9), fill=0)
            im.putalpha(Image.eval(alpha.filter(ImageFilter.BoxBlur(8)), lambda v: 255 - v // 2))
        elif kind == 2:
            im = im.quantize(128)
            im.info["transparency"] = 0
        im.save(out, "PNG", compress_level=6)
        path = folder / f"{i:04d}.png"
    path.write_bytes(out.getvalue())
    return path


def corpus(data_dir: Path, count: int, seed: int) -> list[Path]:
    folder = data_dir / "illustrations"
    folder.mkdir(parents=True, exist_ok=True)
    want = [folder / f"{i:04d}.{'jpg' if i % 4 < 3 else 'png'}" for i in range(count)]
    missing = [i for i, p in enumerate(want) if not p.exists()]
    if missing:
        started = time.monotonic()
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(make_file, [(folder, i, seed) for i in missing]))
        print(f"generated {len(missing)} files in {time.monotonic() - started:.0f} s",
              file=sys.stderr)
    extra = [p for p in folder.iterdir() if p not in want]
    for path in extra:
        path.unlink()
    return want


def full_rgb(data: bytes) -> Image.Image:
    """A full decode to RGB, alpha composited onto white (no draft, no reduced scale)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
            rgba = im.convert("RGBA")
            rgb = Image.new("RGB", im.size, (255, 255, 255))
            rgb.paste(rgba, mask=rgba.getchannel("A"))
            return rgb
        return im.convert("RGB")


def plain_pillow(data: bytes) -> bytes:
    """Full decode, RGB on white, LANCZOS, pad, JPEG: no draft, no reducing_gap."""
    rgb = full_rgb(data)
    geometry = plan_geometry(*rgb.size, ImageSettings(size=SIZE))
    canvas = Image.new("RGB", geometry.canvas, (255, 255, 255))
    canvas.paste(rgb.resize(geometry.scaled, Image.Resampling.LANCZOS), geometry.offset)
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=QUALITY, subsampling="4:2:0")
    return out.getvalue()


def contenders() -> dict:
    pillow = ImageSettings(size=SIZE, quality=QUALITY, jpeg_decoder="pillow")
    fast = ImageSettings(size=SIZE, quality=QUALITY, jpeg_decoder="simplejpeg")
    return {
        "plain Pillow (full decode + LANCZOS)": plain_pillow,
        "prep (Pillow draft)": lambda data: process_image(data, pillow).data,
        "prep (simplejpeg)": lambda data: process_image(data, fast).data,
    }


def time_in_process(fn, files: list[Path], blobs: list[bytes]) -> list[tuple[float, int]]:
    result = []
    for blob in blobs:
        start = time.process_time()
        out = fn(blob)
        result.append((time.process_time() - start, len(out)))
    return result


def time_img2dataset(python: str, cpu: int, files: list[Path], psnr_n: int,
                     out_dir: Path) -> list[tuple[float, int]]:
    run = subprocess.run([python, "-c", I2D_SCRIPT, str(cpu), json.dumps([str(f) for f in files]),
                          str(out_dir), str(psnr_n)], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    if run.returncode != 0:
        raise RuntimeError(f"img2dataset run failed: {run.stderr[-2000:]}")
    return [tuple(x) for x in json.loads(run.stdout.strip().splitlines()[-1])]


def reference(data: bytes) -> tuple[np.ndarray, tuple]:
    """Float32 per-channel LANCZOS of the full decode, and the picture's box on the canvas."""
    rgb = full_rgb(data)
    geometry = plan_geometry(*rgb.size, ImageSettings(size=SIZE))
    channels = [c.convert("F").resize(geometry.scaled, Image.Resampling.LANCZOS)
                for c in rgb.split()]
    picture = np.clip(np.stack([np.asarray(c) for c in channels], -1), 0, 255)
    (x, y), (w, h) = geometry.offset, geometry.scaled
    return picture, (y, y + h, x, x + w)


def psnr(encoded: bytes, ref: tuple[np.ndarray, tuple]) -> float:
    picture, (top, bottom, left, right) = ref
    with Image.open(io.BytesIO(encoded)) as im:
        out = np.asarray(im.convert("RGB"), dtype=np.float32)[top:bottom, left:right]
    mse = float(np.mean((out - picture) ** 2))
    return 10 * np.log10(255**2 / max(mse, 1e-9))


def end_to_end(data_dir: Path, workers: int) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, workers included) of one make-shards run."""
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "prep", "make-shards", "--folder", str(data_dir),
                        "--out", str(Path(tmp) / "out"), "--workers", str(workers), "-q",
                        "--val-fraction", "0"], check=True, cwd=ROOT)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--psnr-images", type=int, default=24)
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--img2dataset-python", default=None,
                        help="python of a venv with img2dataset installed")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: last)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="bench-shards-data-") if not args.data_dir else None
    data_dir = args.data_dir or Path(tmp.name)
    files = corpus(data_dir, args.images, args.seed)
    blobs = [f.read_bytes() for f in files]
    is_jpeg = [f.suffix == ".jpg" for f in files]
    pixels = [Image.open(f).size for f in files]
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    print(f"corpus: {len(files)} files ({sum(is_jpeg)} JPEG), {sum(map(len, blobs)) / 2**20:.0f} "
          f"MiB, mean {statistics.mean(w * h for w, h in pixels) / 1e6:.1f} MP; pinned to CPU "
          f"{cpu}", file=sys.stderr)

    runners = contenders()
    names = list(runners) + (["img2dataset (cv2, INTER_AREA)"] if args.img2dataset_python else [])
    timings: dict[str, list[list[tuple[float, int]]]] = {n: [] for n in names}
    i2d_out = Path(tempfile.mkdtemp(prefix="bench-i2d-"))
    affinity = os.sched_getaffinity(0)
    for round_number in range(args.rounds):
        order = names[round_number % len(names):] + names[:round_number % len(names)]
        for name in order:
            if name.startswith("img2dataset"):
                timings[name].append(time_img2dataset(args.img2dataset_python, cpu, files,
                                                      args.psnr_images, i2d_out))
            else:
                os.sched_setaffinity(0, {cpu})
                timings[name].append(time_in_process(runners[name], files, blobs))
                os.sched_setaffinity(0, affinity)
            print(f"round {round_number + 1} {name}: "
                  f"{len(files) / sum(s for s, _ in timings[name][-1]):.1f} img/s",
                  file=sys.stderr)

    refs = [reference(b) for b in blobs[:args.psnr_images]]
    quality = {}
    for name in names:
        if name.startswith("img2dataset"):
            outputs = [(i2d_out / f"{i}.jpg").read_bytes() for i in range(len(refs))]
        else:
            outputs = [runners[name](b) for b in blobs[:len(refs)]]
        scores = [psnr(o, r) for o, r in zip(outputs, refs, strict=True)]
        quality[name] = (statistics.mean(scores), min(scores))

    rows = []
    for name in names:
        def rate(mask, rounds=timings[name]):
            per_round = [len([m for m in mask if m]) / sum(s for (s, _), m in zip(r, mask,
                         strict=True) if m) for r in rounds]
            return statistics.median(per_round)
        everything = [True] * len(files)
        kb = statistics.mean(size for _, size in timings[name][0]) / 1024
        rows.append({"name": name, "all": rate(everything), "jpeg": rate(is_jpeg),
                     "png": rate([not j for j in is_jpeg]), "kb": kb,
                     "psnr_mean": quality[name][0], "psnr_min": quality[name][1]})
    baseline = rows[0]["all"]

    e2e = {w: end_to_end(data_dir, w) for w in (1, 2)}
    print(f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, {platform.platform()}")
    print(f"Corpus: {len(files)} files, {sum(is_jpeg)} JPEG / {len(files) - sum(is_jpeg)} PNG, "
          f"mean {statistics.mean(w * h for w, h in pixels) / 1e6:.1f} MP; 448 pad, q90; "
          f"median of {args.rounds} interleaved rounds, one core\n")
    print("| contender | all img/s | JPEG | PNG | vs plain | out KB | PSNR mean / min dB |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['name']} | {row['all']:.1f} | {row['jpeg']:.1f} | {row['png']:.1f} | "
              f"{row['all'] / baseline:.2f}x | {row['kb']:.0f} | "
              f"{row['psnr_mean']:.1f} / {row['psnr_min']:.1f} |")
    print("\n| make-shards end to end | wall s | img/s | CPU s | img per CPU s |")
    print("|---|---:|---:|---:|---:|")
    for workers, (wall, cpu) in e2e.items():
        print(f"| --workers {workers} | {wall:.1f} | {len(files) / wall:.1f} | {cpu:.1f} | "
              f"{len(files) / cpu:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "end_to_end": e2e,
                                         "files": len(files)}, indent=2))
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
