"""Visual-tag AP per group: resnet18 / EfficientNet-Lite0 from scratch against Lite0 from ImageNet.

    python bench/transfer_ap.py --shards demo-out/shards --out /tmp/transfer [--only c,d]
    python bench/transfer_ap.py --read RUN [RUN ...]      # the table of runs already trained

Trains each variant on the same shards, one after another (`python -m train`, two torch
threads), and prints the macro AP over the emulator's 28 visual tags and per group (background
colours, patterns, shapes, counts, border, monochrome) from each run's eval.json. The variants
(docs/BENCHMARKS.md, "Transfer learning on the demo's shards"):

    a  resnet18 from scratch, the demo's settings before it started from ImageNet weights
    b  timm:tf_efficientnet_lite0 from scratch, the same settings
    c  timm:tf_efficientnet_lite0 from ImageNet (the [demo] extra's file), full fine-tune
    d  the same ImageNet weights as a linear probe (--freeze-backbone)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

# bench/scrape.py is named like the package: keep bench/ off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
from scrape.emulator.vocab import (  # noqa: E402
    BACKGROUND_COLOURS,
    BACKGROUND_PATTERNS,
    COUNT_TAGS,
    SHAPES,
)
from shards.tags import read_tags  # noqa: E402

GROUPS = {"colours": list(BACKGROUND_COLOURS), "patterns": BACKGROUND_PATTERNS,
          "shapes": SHAPES, "counts": COUNT_TAGS, "border": ["border"],
          "monochrome": ["monochrome"]}
VISUAL = [tag for tags in GROUPS.values() for tag in tags]

COMMON = ["--image-size", "64", "--epochs", "4", "--batch-size", "32", "--keep", "last",
          "--workers", "2", "--no-report", "-q"]
SCRATCH = ["--lr", "5e-4", "--dropout", "0", "--crop-scale", "1", "1", "--warmup-steps", "40"]
LITE0 = ["--arch", "timm:tf_efficientnet_lite0"]
VARIANTS = {
    "a": ["--arch", "resnet18", "--weights", "none", *SCRATCH],
    "b": [*LITE0, "--weights", "none", *SCRATCH],
    "c": [*LITE0, "--weights", "imagenet", "--lr", "2e-3", "--lr-backbone", "5e-4",
          "--dropout", "0", "--crop-scale", "1", "1", "--warmup-steps", "20"],
    "d": [*LITE0, "--weights", "imagenet", "--freeze-backbone", "--lr", "5e-3",
          "--dropout", "0", "--crop-scale", "1", "1", "--warmup-steps", "20"],
}


def group_ap(run: Path) -> dict[str, float]:
    """Macro AP of a run's eval.json over the 28 visual tags (`macro`) and over each group."""
    report = json.loads((run / "eval.json").read_text())
    names = [row["name"] for row in read_tags(run / "tags.csv")]
    ap = dict(zip(names, report["per_tag"]["ap"], strict=True))
    missing = [tag for tag in VISUAL if tag not in ap or ap[tag] != ap[tag]]
    if missing:
        raise SystemExit(f"transfer_ap: error: {run}: no AP for {', '.join(missing)}")
    out = {"macro": sum(ap[t] for t in VISUAL) / len(VISUAL)}
    out.update({group: sum(ap[t] for t in tags) / len(tags) for group, tags in GROUPS.items()})
    return out


def print_table(rows: list[tuple[str, dict[str, float]]]) -> None:
    """One markdown row per run: macro AP and the six groups."""
    print("| run | macro, 28 | " + " | ".join(GROUPS) + " |")
    print("|---|---:|" + "---:|" * len(GROUPS))
    for name, values in rows:
        print(f"| {name} | **{values['macro']:.3f}** | "
              + " | ".join(f"{values[g]:.3f}" for g in GROUPS) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path, help="a complete shard build (the demo's)")
    ap.add_argument("--out", type=Path, help="folder for the runs (OUT/a, OUT/b, ...)")
    ap.add_argument("--only", default="a,b,c,d", help="variants to train, comma list")
    ap.add_argument("--read", type=Path, nargs="+", help="print the table of these runs")
    ap.add_argument("extra", nargs=argparse.REMAINDER,
                    help="after --: more train flags for every variant (later ones win)")
    args = ap.parse_args()
    if args.read:
        print_table([(str(run), group_ap(run)) for run in args.read])
        return 0
    if not args.shards or not args.out:
        ap.error("--shards and --out are needed to train (or --read RUN ...)")
    extra = [a for a in args.extra if a != "--"]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    rows = []
    for key in args.only.split(","):
        if key not in VARIANTS:
            ap.error(f"--only: unknown variant {key!r} (a, b, c or d)")
        run = args.out / key
        cmd = [sys.executable, "-m", "train", "--stream", "--shards", str(args.shards),
               "--out", str(run), *COMMON, *VARIANTS[key], *extra]
        print("$ " + shlex.join(cmd), flush=True)
        start = time.time()
        if subprocess.run(cmd, env=env).returncode != 0:
            return 1
        rows.append((f"{key} ({time.time() - start:.0f} s)", group_ap(run)))
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
