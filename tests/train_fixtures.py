"""Tiny shards for trainer tests, written straight from the emulator's world.

These follow DESIGN.md boundary 3 (manifest.json, tags.csv, train/ and val/ tar files with
<key>.jpg and <key>.json) without going through `prep make-shards`, so the trainer's tests do
not depend on the prep stage; an end-to-end test covers the two together.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from scrape.emulator import vocab as V
from scrape.emulator.files import FileStore
from scrape.emulator.world import World

VISUAL = ["red_background", "blue_background", "green_background", "white_background",
          "black_background", "circle", "square", "star_(symbol)", "border", "monochrome",
          "single_object", "many_objects"]


def emulator_shards(root: Path, posts: int = 480, size: int = 64, per_shard: int = 100,
                    val_every: int = 6, seed: int = 11, tags: list[str] | None = None) -> Path:
    """Shards of the world's images (visual tags as labels) at `size` px; returns root."""
    world = World(seed=seed, n_posts=posts, image_scale=0.12)
    store = FileStore(world)
    tags = tags or VISUAL
    rows = {"train": [], "val": []}
    for post in world.scan(lambda blk: np.ones(len(blk.ids), bool)):
        if post.file_ext not in {"jpg", "png"}:
            continue
        im = Image.open(io.BytesIO(store.get(post, "original"))).convert("RGB")
        im = im.resize((size, size))
        out = io.BytesIO()
        im.save(out, "JPEG", quality=90)
        split = "val" if post.id % val_every == 0 else "train"
        rows[split].append((f"{post.id:09d}", out.getvalue(),
                            {"tags": post.tags[V.GENERAL] + post.tags[V.CHARACTER],
                             "id": post.id}))
    return write_shards(root, rows, [(t, 0) for t in tags], per_shard)


def write_shards(root: Path, rows: dict, tags: list[tuple[str, int]], per_shard: int,
                 task: str = "multilabel") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    counts = {t: 0 for t, _ in tags}
    for _, _, meta in rows["train"]:
        for t in meta["tags"]:
            if t in counts:
                counts[t] += 1
    with (root / "tags.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tag_id", "name", "category", "count"])
        for name, cat in tags:
            w.writerow([-1, name, cat, counts[name]])
    splits = {}
    for split, items in rows.items():
        (root / split).mkdir(exist_ok=True)
        shards = []
        for i in range(0, len(items), per_shard):
            name = f"{i // per_shard:05d}"
            chunk = items[i:i + per_shard]
            with wds.TarWriter(str(root / split / f"{name}.tar")) as tw:
                for key, jpg, meta in chunk:
                    tw.write({"__key__": key, "jpg": jpg, "json": json.dumps(meta).encode()})
            shards.append({"name": name, "count": len(chunk), "successes": len(chunk)})
        splits[split] = {"shards": shards, "count": len(items), "successes": len(items)}
    (root / "manifest.json").write_text(json.dumps({"format": "booru-tagger-shards",
                                                    "format_version": 1, "complete": True,
                                                    "task": task,
                                                    "splits": splits}))
    return root
