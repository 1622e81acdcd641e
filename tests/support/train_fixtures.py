"""Tiny shards for trainer tests, written straight from the emulator's world.

They are written through the shards library (ShardWriter, write_tags, write_manifest), so they
are in the real format of docs/DESIGN.md, "Boundary 3: shards (shards/)" and a format change
breaks the tests that depend on it, without going through `prep make-shards`; an end-to-end test
covers the two together.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from prep.labels import index_of
from scrape.emulator import vocab as V
from scrape.emulator.files import FileStore
from scrape.emulator.world import World
from shards import ShardWriter
from shards.format import FORMAT_NAME, FORMAT_VERSION, TAGS, shard_name
from shards.manifest import complete, write_manifest
from shards.tags import read_tags, write_tags

VISUAL = ["red_background", "blue_background", "green_background", "white_background",
          "black_background", "circle", "square", "star_(symbol)", "border", "monochrome",
          "single_object", "many_objects"]


def shared_folder(tmp_path_factory, key: str, build: Callable[[Path], None]) -> Path:
    """A folder that ``build(folder)`` fills once per test session, for every xdist worker of
    it (a lock beside it in the session's shared temporary root): for expensive read-only
    inputs (a trained run, shards) that several modules use. Copy it before changing it."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
    root.mkdir(exist_ok=True)
    folder = root / key
    with (root / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{key}.done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (root / f"{key}.done").touch()
    return folder


def tiny_run(tmp_path_factory, into: Path, side: int = 32) -> Path:
    """A copy in ``into`` of a barely trained run (resnet18, 120 emulator posts at ``side``
    px, two steps), trained once per session: the export tests need a model, not a good one."""
    def build(root: Path) -> None:
        from train.run import Run
        from train.settings import TrainSettings

        shards = emulator_shards(root / "shards", posts=120, size=side)
        Run(TrainSettings(shards=str(shards), out=str(root / "run"), model="resnet18",
                          weights="none", image_size=side, epochs=1, batch_size=16, workers=0,
                          log_every=0, checkpoint_every=0, max_steps=2)).fit()

    shared = shared_folder(tmp_path_factory, f"tiny-run-{side}", build)
    shutil.copytree(shared, into)
    return into / "run"


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
    """Shards in the real format: tags.csv, ShardWriter shards and a checked, complete manifest
    (shards/), from ``rows[split] = [(key, jpeg bytes, meta), ...]``; returns root."""
    root.mkdir(parents=True, exist_ok=True)
    counts = {t: 0 for t, _ in tags}
    for _, _, meta in rows["train"]:
        for t in meta["tags"]:
            if t in counts:
                counts[t] += 1
    write_tags(root / TAGS, [(-1, name, cat, counts[name]) for name, cat in tags])
    index = index_of(read_tags(root / TAGS))
    splits = {}
    for split, items in rows.items():
        shards = []
        for i in range(0, len(items), per_shard):
            name, chunk = shard_name(i // per_shard), items[i:i + per_shard]
            with ShardWriter(root / split, name) as writer:
                for key, jpg, meta in chunk:
                    if "label_ids" not in meta:     # the labels make-shards would record
                        names, ids = index.labels(meta.get("tags") or [], meta.get("rating"))
                        meta = {**meta, "labels": names, "label_ids": ids}
                    writer.write({"__key__": key, "jpg": jpg, "json": meta})
            shards.append({"name": name, "count": len(chunk)})
        splits[split] = {"shards": shards, "count": len(items)}
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "complete": False,
                "task": task, "splits": splits}
    write_manifest(root, complete(root, manifest))
    return root


def corrupt_images(tar_path: Path, members: tuple[int, ...]) -> list[str]:
    """Rewrite the tar at `tar_path` with the image members at these member indices made
    undecodable; returns the keys of the samples that now fail to decode."""
    import tarfile
    with tarfile.open(tar_path) as tar:
        items = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    broken = []
    with tarfile.open(tar_path, "w") as tar:
        for i, (member, data) in enumerate(items):
            if i in members and member.name.endswith(".jpg"):
                data = b"not a jpeg" * 10
                member.size = len(data)
                broken.append(member.name.split(".")[0])
            tar.addfile(member, io.BytesIO(data))
    return broken
