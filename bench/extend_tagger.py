"""Extending a tagger on the emulator: new-tag AP and old-tag forgetting per variant (issue 24).

    python bench/extend_tagger.py --out /tmp/extend                  # every step, CPU-sized
    python bench/extend_tagger.py --out /tmp/extend --base WD-FOLDER # reuse a base tagger
    python bench/extend_tagger.py --read /tmp/extend                 # the table of runs done
    python bench/extend_tagger.py --out /tmp/extend-smoke --posts 400 --new 40 \\
        --epochs 1 --max-steps 2                                     # a smoke run

The steps, each a real command (`python -m prep`, `python -m train`, two torch threads):

 1. pictures: the emulator's posts (scrape.emulator's World and FileStore) at 64 px, in three
    disjoint sets by post id, written as image + `.txt` caption folders (the layout LoRA
    trainers use): `base/` (the old kind of data: captions name every visual tag but NEW),
    `held-out/` (pictures of every kind, never trained on, captions naming every visual tag,
    NEW too) and `new/` (`--new` pictures, half of them with a NEW tag, captions naming only
    the NEW tags: the folder a user has); and `all/` (base + new with every visual tag, for
    the reference run);
 2. shards: `prep make-shards --folder` for each (held-out with all/'s tags.csv);
 3. the base tagger: `timm:tf_efficientnet_lite0` from its ImageNet weights (the `[demo]`
    extra) trained on base/, exported with `train export --format wd` (or `--base WD-FOLDER`);
 4. the extension variants, each `train --init-from` the WD folder on new/ with
    `--retention-shards held-out/`:
        head        --freeze-backbone (the teacher's soft targets for the old tags)
        head-rows   --freeze-backbone --freeze-old-rows
        teacher     full fine-tune, --old-tags teacher (the default)
        labels      full fine-tune, --old-tags labels (old tags absent = 0: the naive way)
    and `reference`: the same start trained on all/ (old + new pictures, every label:
        `--old-tags labels`, the labels being complete there);
 5. the table: per variant, the new tags' AP on held-out/ (pictures unlike the few taught
    on) and on the run's own validation split, and the old tags' mAP before, after and the
    drop on held-out/, from each run's eval.json (`retention`).

docs/BENCHMARKS.md, "Extending a tagger", has the numbers of a full run.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

# bench/scrape.py is named like the package: keep bench/ off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
from PIL import Image  # noqa: E402

from scrape.emulator import vocab as V  # noqa: E402
from scrape.emulator.files import FileStore  # noqa: E402
from scrape.emulator.world import World  # noqa: E402

NEW = ["heart", "crescent"]                          # the tags the base never saw
OLD = [t for t in V.VISUAL_TAGS if t not in NEW]
SIDE = 64
ARCH = ["--arch", "timm:tf_efficientnet_lite0", "--weights", "imagenet"]
# The base tagger: the best full fine-tune of the demo's budget (docs/BENCHMARKS.md, "Transfer
# learning on the demo's shards"): the head alone for 60 steps, then every layer.
BASE = [*ARCH, "--lr", "2e-3", "--lr-backbone", "2e-3", "--head-warmup-steps", "60"]
FINE_TUNE = ["--lr", "2e-3", "--lr-backbone", "2e-4", "--head-warmup-steps", "20"]
VARIANTS = {
    "head": ["--freeze-backbone", "--lr", "5e-3"],
    "head-rows": ["--freeze-backbone", "--freeze-old-rows", "--lr", "5e-3"],
    "teacher": ["--old-tags", "teacher", *FINE_TUNE],
    "labels": ["--old-tags", "labels", *FINE_TUNE],
}
REFERENCE = ["--old-tags", "labels", *FINE_TUNE]


def write_folders(out: Path, posts: int, new: int, seed: int) -> None:
    """base/, held-out/, new/ and all/: pictures with `.txt` captions (see the docstring)."""
    world = World(seed=seed, n_posts=posts, image_scale=0.12)
    store = FileStore(world)
    folders = {name: out / name for name in ("base", "held-out", "new", "all")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    taken = 0
    for post in world.scan(lambda blk: blk.ids == blk.ids):
        if post.file_ext not in {"jpg", "png"}:
            continue
        visual = [t for t in post.tags[V.GENERAL] if t in V.VISUAL_TAGS]
        has_new = [t for t in visual if t in NEW]
        if post.id % 5 == 0 and taken < new and bool(has_new) == (taken % 2 == 0):
            kinds, taken = {"new": has_new, "all": visual}, taken + 1
        elif post.id % 5 == 4:
            kinds = {"held-out": visual}
        elif post.id % 5 in (1, 2, 3):
            kinds = {"base": [t for t in visual if t in OLD], "all": visual}
        else:
            continue
        im = Image.open(io.BytesIO(store.get(post, "original"))).convert("RGB")
        im.thumbnail((SIDE, SIDE))
        buffer = io.BytesIO()
        im.save(buffer, "PNG")
        for kind, tags in kinds.items():
            (folders[kind] / f"{post.id:09d}.png").write_bytes(buffer.getvalue())
            (folders[kind] / f"{post.id:09d}.txt").write_text(", ".join(tags) + "\n")
    if taken < new:
        print(f"extend_tagger: only {taken} pictures for new/; raise --posts", file=sys.stderr)


def run(*argv: str) -> None:
    """One command, echoed; a failure stops the benchmark."""
    print("$", shlex.join(argv), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": os.getcwd()}
    subprocess.run([sys.executable, *argv], check=True, env=env)


def shards(out: Path, name: str, *extra: str) -> Path:
    """`prep make-shards --folder out/name` into out/shards-name (once)."""
    dest = out / f"shards-{name}"
    if not (dest / "manifest.json").exists():
        run("-m", "prep", "make-shards", "--folder", str(out / name), "--out", str(dest),
            "--image-size", str(SIDE), "--val-fraction", "0.2", "--workers", "2", "-q",
            *extra)
    return dest


def train(dest: Path, shard_dir: Path, common: list[str], *extra: str) -> Path:
    """`train --stream` into `dest` (once); returns the run."""
    if not (dest / "eval.json").exists():
        run("-m", "train", "--stream", "--shards", str(shard_dir), "--out", str(dest),
            "--overwrite", *common, *extra)
    return dest


def row(run_dir: Path) -> dict:
    """A variant's numbers from its eval.json's `retention`: new-tag AP on held-out/ and on
    the run's validation split, old-tag mAP before/after/drop."""
    r = json.loads((run_dir / "eval.json").read_text())["retention"]
    return {"new_ap": r["new_tags_ap_held_out"], "new_val": r["new_tags_ap"],
            "before": r["map_before"], "after": r["map_after"], "drop": r["drop"]}


def print_table(runs: Path) -> None:
    """One markdown row per run found under runs/."""
    rows = {p.name: row(p) for p in sorted(runs.iterdir()) if (p / "eval.json").exists()}
    reference = rows.get("reference", {}).get("new_ap", float("nan"))
    print("| variant | new-tag AP, held-out | / reference | new-tag AP, own val | "
          "old-tag mAP before | after | drop |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        share = r["new_ap"] / reference if reference == reference and reference else math.nan
        print(f"| {name} | {r['new_ap']:.3f} | {share:.2f} | {r['new_val']:.3f} | "
              f"{r['before']:.3f} | {r['after']:.3f} | {r['drop']:+.3f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="where the folders, shards and runs go")
    ap.add_argument("--read", type=Path, metavar="OUT", help="print the table of OUT's runs")
    ap.add_argument("--base", type=Path, metavar="WD-FOLDER",
                    help="a WD v3 folder to extend instead of training one")
    ap.add_argument("--posts", type=int, default=3000, help="emulator posts to draw from")
    ap.add_argument("--new", type=int, default=200, help="captioned pictures of the NEW tags")
    ap.add_argument("--epochs", type=int, default=4, help="of the base and the reference")
    ap.add_argument("--extend-epochs", type=int, default=20,
                    help="of each extension variant (new/ is small: ~5 steps an epoch)")
    ap.add_argument("--max-steps", type=int, help="stop every run early (smoke runs)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--only", help="comma list of variants (default: all, and reference)")
    args = ap.parse_args()
    if args.read:
        print_table(args.read / "runs")
        return 0
    if not args.out:
        ap.error("--out or --read is required")
    start = time.perf_counter()
    if not (args.out / "all").exists():
        write_folders(args.out, args.posts, args.new, args.seed)
    common = ["--image-size", str(SIDE), "--batch-size", "32", "--keep", "last", "--workers",
              "2", "--no-report", "-q", "--crop-scale", "1", "1", "--dropout", "0"]
    if args.max_steps:
        common += ["--max-steps", str(args.max_steps)]
    base_shards = shards(args.out, "base")
    all_shards = shards(args.out, "all")
    held_out = shards(args.out, "held-out", "--tags", str(all_shards / "tags.csv"))
    new_shards = shards(args.out, "new")
    base = args.base
    if base is None:
        base_run = train(args.out / "base-run", base_shards, common, "--epochs",
                         str(args.epochs), *BASE)
        base = args.out / "base-wd"
        if not (base / "config.json").exists():
            run("-m", "train", "export", "--model", str(base_run), "--format", "wd",
                "--out", str(base))
    wanted = args.only.split(",") if args.only else [*VARIANTS, "reference"]
    for name in wanted:
        data, epochs, flags = ((all_shards, args.epochs, REFERENCE) if name == "reference"
                               else (new_shards, args.extend_epochs, VARIANTS[name]))
        train(args.out / "runs" / name, data, common, "--init-from", str(base),
              "--retention-shards", str(held_out), "--epochs", str(epochs), *flags)
    print_table(args.out / "runs")
    print(f"extend_tagger: done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
