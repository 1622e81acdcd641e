"""Benchmark the near-duplicate side of ``prep make-shards``: threshold, hashing cost, grouping.

    .venv/bin/python bench/phash.py                       # all three parts, ~3 min on 2 cores
    .venv/bin/python bench/phash.py --parts distances --posts 3000
    .venv/bin/python bench/phash.py --parts cost --baseline-root /tmp/before  # + end to end

1. ``distances``: pHash Hamming distances on the emulator's world (seed 0, ``--posts``,
   image scale 0.25): every re-upload child against its parent (``resized``: 50-85 % JPEG,
   ``edited``: a note drawn on it), and every pair of unrelated pictures; prints how many of
   each fall within each threshold, for the hash make-shards stores (of the prepared 448 px
   picture, :func:`prep.phash.phash_prepared`) and for the hash of the full decode. The
   default ``--near-distance`` is read off this table.
2. ``cost``: CPU seconds per image, on ``bench/make_shards.py``'s corpus (booru-like JPEG and
   PNG, long side 1000-4000 px): ``prep.imaging.process_image`` (make-shards' per-image work),
   the extra work of near-duplicate detection before (a separate hashing pass: reduced
   ``draft`` decode + hash, :func:`draft_hash_file`) and now (the hash of the picture the
   first pass prepares anyway, and writing + reading back the staged image), and the hash
   alone on a full decode (imagehash's ``phash`` against ``prep.phash.phash_image``). With
   ``--baseline-root`` (a checkout of the code before the stage, e.g. ``git archive b7b9496``)
   also ``prep make-shards --folder`` end to end, ``--workers 1``, CPU seconds of the command,
   baseline and this tree interleaved over ``--rounds``.
3. ``grouping``: ``prep.groups.near_pairs`` + ``components`` on ``--hashes`` uniform random
   64-bit hashes with 1 % planted near copies (1-3 bits flipped), at several distances.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "bench"))

from prep.groups import components, near_pairs, popcount  # noqa: E402
from prep.imaging import (  # noqa: E402
    ImageRejected,
    ImageSettings,
    prepare_picture,
    process_image,
)
from prep.make_shards.first_pass import FirstPassCache, cache_item  # noqa: E402
from prep.phash import FileHash, from_hex, phash_image, phash_prepared  # noqa: E402


def draft_hash_file(path: Path) -> FileHash:
    """The hashing pass make-shards had before the stage (commit b7b9496): the header size, a
    reduced decode (JPEG ``draft``: the DCT scale 1/2..1/8 that keeps >= 64 px), EXIF
    orientation, then :func:`prep.phash.phash_image`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                im.draft("RGB", (64, 64))
                im.load()
                oriented = ImageOps.exif_transpose(im)
                if oriented.size[0] != im.size[0] and im.size[0] != im.size[1]:
                    width, height = height, width
                return FileHash(phash_image(oriented), width, height)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes a reason
        return FileHash(None, None, None, f"{type(exc).__name__}: {exc}"[:200])


def distances(posts: int, thresholds: list[int]) -> None:
    import io

    from scrape.emulator.files import FileStore
    from scrape.emulator.world import World

    world = World(seed=0, n_posts=posts, image_scale=0.25)
    store = FileStore(world)
    settings = ImageSettings()
    prepared: dict[int, str] = {}
    full: dict[int, str] = {}
    kinds: dict[int, tuple[str, int]] = {}
    for b in range(world.n_blocks):
        for i in range(len(world.block(b).ids)):
            post = world._post(world.block(b), i)
            if post.file_ext not in {"jpg", "png", "gif", "webp"}:
                continue
            data = store.get(post, "original")
            try:
                picture = prepare_picture(data, settings)
            except ImageRejected:  # animated: make-shards skips it too
                continue
            prepared[post.id] = phash_prepared(picture.picture, picture.original, settings)
            with Image.open(io.BytesIO(data)) as im:
                full[post.id] = phash_image(im)
            if post.reupload and post.parent_id:
                kinds[post.id] = (post.reupload, post.parent_id)
    for name, hashes in (("the prepared 448 px picture (stored)", prepared),
                         ("the full decode", full)):
        print(f"\npHash of {name}:")
        _distance_table(hashes, kinds, posts, thresholds)


def _distance_table(hashes: dict[int, str], kinds: dict[int, tuple[str, int]], posts: int,
                    thresholds: list[int]) -> None:
    ids = sorted(hashes)
    values, _ = from_hex([hashes[i] for i in ids])
    position = {post_id: k for k, post_id in enumerate(ids)}
    rows: dict[str, np.ndarray] = {}
    for kind in ("resized", "edited"):
        pairs = [(position[c], position[p]) for c, (k, p) in kinds.items()
                 if k == kind and p in position]
        a, b = np.array(pairs).T
        rows[f"{kind} re-upload vs parent ({len(pairs)})"] = popcount(values[a] ^ values[b])
    ii, jj = np.triu_indices(len(ids), 1)
    d = popcount(values[ii] ^ values[jj])
    chains = _chain_pairs(kinds, position)
    unrelated = np.ones(len(d), dtype=bool)
    if chains:
        codes = ii * len(ids) + jj
        unrelated = ~np.isin(codes, np.array(sorted(chains)))
    rows[f"unrelated pairs ({int(unrelated.sum()):,})"] = d[unrelated]
    print(f"\n{len(ids)} pictures of a {posts}-post world\n")
    print("| pairs | " + " | ".join(f"<= {t}" for t in thresholds) + " | median |")
    print("|---|" + "---:|" * (len(thresholds) + 1))
    for name, dist in rows.items():
        cells = " | ".join(f"{(dist <= t).sum():,}" for t in thresholds)
        print(f"| {name} | {cells} | {np.median(dist):.0f} |")


def _chain_pairs(kinds: dict[int, tuple[str, int]], position: dict[int, int]) -> set[int]:
    """Codes a * n + b of pictures that share a picture through re-upload chains."""
    root: dict[int, int] = {}
    for child in sorted(kinds):
        parent = kinds[child][1]
        root[child] = root.get(parent, parent)
    members: dict[int, list[int]] = {}
    for child, top in root.items():
        members.setdefault(top, [top]).append(child)
    n = len(position)
    codes = set()
    for group in members.values():
        rows = sorted(position[p] for p in group if p in position)
        codes.update(a * n + b for a, b in combinations(rows, 2))
    return codes


def cost(images: int, data_dir: Path, baseline_root: Path | None, rounds: int) -> None:
    import imagehash
    from make_shards import corpus

    files = corpus(data_dir, images, seed=0)
    settings = ImageSettings()
    names = ["make-shards process_image (448 pad, JPEG q90)",
             "before: hashing pass (draft decode + hash)",
             "now: hash of the prepared picture", "now: stage write + read back",
             "full decode (Pillow)", "imagehash.phash on the full decode",
             "prep.phash on the full decode"]
    timings: dict[str, list[float]] = {k: [] for k in names}
    bits = []
    with tempfile.TemporaryDirectory(prefix="bench-phash-") as tmp:
        stage = FirstPassCache(Path(tmp), settings)
        staged_rows = []
        for path in files:
            data = path.read_bytes()
            timings[names[0]].append(_cpu(process_image, data, settings))
            timings[names[1]].append(_cpu(draft_hash_file, path))
            ready = prepare_picture(data, settings)
            timings[names[2]].append(_cpu(phash_prepared, ready.picture, ready.original,
                                          settings))
            staged = cache_item((str(path), path.name), settings)[2]
            staged_rows.append((str(path), (0, 0), staged))
            im = Image.open(path)
            timings[names[4]].append(_cpu(im.load))
            rgb = im.convert("RGB")
            timings[names[5]].append(_cpu(imagehash.phash, rgb))
            timings[names[6]].append(_cpu(phash_image, rgb))
            values, _ = from_hex([staged.found.phash, str(imagehash.phash(rgb))])
            bits.append(int(popcount(values[:1] ^ values[1:])[0]))
        _stage_io(FirstPassCache(Path(tmp) / "warm-up", settings), staged_rows[:1])  # first use
        seconds = _cpu(_stage_io, stage, staged_rows)
        timings[names[3]] = [seconds / len(files)]
    base = float(np.mean(timings[names[0]]))
    print(f"\n{len(files)} files of bench/make_shards.py's corpus, CPU ms per image\n")
    print("| step | ms/image | vs make-shards |\n|---|---:|---:|")
    for name, values in timings.items():
        mean = float(np.mean(values))
        print(f"| {name} | {mean * 1e3:.2f} | {mean / base:.1%} |")
    now = float(np.mean(timings[names[2]]) + np.mean(timings[names[3]]))
    print(f"| **extra for near-duplicates, before** | {np.mean(timings[names[1]]) * 1e3:.2f} | "
          f"{np.mean(timings[names[1]]) / base:.1%} |")
    print(f"| **extra for near-duplicates, now** | {now * 1e3:.2f} | {now / base:.1%} |")
    print(f"\nstored hash vs imagehash.phash of the full decode: {np.mean(bits):.2f} bits "
          f"apart on average, {max(bits)} at most")
    if baseline_root is not None:
        end_to_end(data_dir, baseline_root, rounds, len(files))


def _stage_io(stage: FirstPassCache, rows: list) -> None:
    """The staged pictures written as one part (as make-shards does) and read back."""
    stage._write(rows)
    for path, _, staged in rows:
        assert stage.result(path)[2].data == staged.encoded.data


def end_to_end(data_dir: Path, baseline_root: Path, rounds: int, images: int) -> None:
    """``prep make-shards --folder``, ``--workers 1``: CPU seconds, baseline and this tree."""
    runs: dict[str, list[float]] = {"before (separate hashing pass)": [],
                                    "now (one staged first pass)": []}
    for _ in range(rounds):
        for name, root in zip(runs, (baseline_root, ROOT), strict=True):
            with tempfile.TemporaryDirectory(prefix="bench-phash-") as tmp:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run([sys.executable, "-m", "prep", "make-shards", "--folder",
                                str(data_dir), "--out", str(Path(tmp) / "out"), "--workers",
                                "1", "-q"], check=True, cwd=root,
                               env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                runs[name].append(after.ru_utime - before.ru_utime
                                  + after.ru_stime - before.ru_stime)
    print(f"\nprep make-shards --folder, {images} images, --workers 1, CPU s "
          f"(median of {rounds})\n")
    print("| code | CPU s | ms/image |\n|---|---:|---:|")
    for name, values in runs.items():
        median = float(np.median(values))
        print(f"| {name} | {median:.2f} | {median / images * 1e3:.1f} |")


def _cpu(fn, *args) -> float:
    start = time.process_time()
    fn(*args)
    return time.process_time() - start


def grouping(count: int, distances_: list[int]) -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**64 - 1, count, dtype=np.uint64, endpoint=True)
    planted = rng.choice(count, count // 100, replace=False)
    sources = rng.integers(0, count, len(planted))
    flips = np.zeros(len(planted), np.uint64)
    for _ in range(rng.integers(1, 4)):
        flips |= np.uint64(1) << rng.integers(0, 64, len(planted)).astype(np.uint64)
    hashes[planted] = hashes[sources] ^ flips
    print(f"\n{count:,} hashes, 1 % planted copies with 1-3 bits flipped, wall seconds\n")
    print("| max distance | pairs | near_pairs s | + components s |\n|---:|---:|---:|---:|")
    for d in distances_:
        start = time.perf_counter()
        i, j = near_pairs(hashes, d)
        found = time.perf_counter() - start
        components(count, i, j)
        total = time.perf_counter() - start
        print(f"| {d} | {len(i):,} | {found:.1f} | {total:.1f} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="distances,cost,grouping",
                        help="comma list of distances, cost, grouping (default: all)")
    parser.add_argument("--posts", type=int, default=3000, help="emulator posts (default 3000)")
    parser.add_argument("--thresholds", default="0,2,4,6,8,10,12",
                        help="distances to tabulate (default 0,2,4,6,8,10,12)")
    parser.add_argument("--images", type=int, default=40, help="corpus files (default 40)")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/bench-shards"),
                        help="corpus folder shared with bench/make_shards.py")
    parser.add_argument("--baseline-root", type=Path, default=None,
                        help="checkout of the earlier code for the end-to-end comparison "
                             "(default: none, skipped)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="end-to-end runs of each code (default 3)")
    parser.add_argument("--hashes", type=int, default=1_000_000,
                        help="synthetic hashes to group (default 1,000,000)")
    parser.add_argument("--distances", default="4,6,8",
                        help="max distances to group at (default 4,6,8)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    if "distances" in parts:
        distances(args.posts, [int(t) for t in args.thresholds.split(",")])
    if "cost" in parts:
        cost(args.images, args.data_dir, args.baseline_root, args.rounds)
    if "grouping" in parts:
        grouping(args.hashes, [int(d) for d in args.distances.split(",")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
