"""One rule for a folder's images: `tag DIR`, `tag review DIR` and `prep make-shards --folder`
list the same files, in the same order (prep/image_files.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from support.train_fixtures import tiny_run

from prep.cli import main as prep_main
from train.tag.cli import main as tag_main
from train.tag.review.store import ReviewStore

# The images of the folder below as the rule says (hand-written): visible files with an image
# suffix in any case, nested folders included, sorted by POSIX path relative to the folder
# ("x.jpg" before "x/1.jpg": "." sorts before "/", though the folder "x" sorts before "x.jpg"
# as a path part).
EXPECTED = ["a.JPG", "b.png", "sub/deep/c.WebP", "x.jpg", "x/1.jpg"]
HIDDEN = [".hidden.jpg", ".dot/d.jpg", "sub/.cache/e.png"]
NOT_IMAGES = ["notes.txt", "list.csv", "h.jpgx", "sub/deep/c.WebP.json"]


def _folder(root):
    rng = np.random.default_rng(3)
    for i, name in enumerate(EXPECTED + HIDDEN):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)   # distinct md5s
        fmt = {".jpg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[path.suffix.lower()]
        Image.fromarray(pixels).save(path, fmt)
        path.with_suffix(".txt").write_text("red_background\n")   # captions: every image kept
    for name in NOT_IMAGES:
        (root / name).write_text("not a picture\n")
    return root


def test_tag_review_and_make_shards_see_the_same_images(tmp_path_factory, tmp_path):
    pics = _folder(tmp_path / "pics")
    run = tiny_run(tmp_path_factory, tmp_path / "model")

    table = tmp_path / "tags.jsonl"
    assert tag_main(["--model", str(run), str(pics), "--output", str(table), "--workers", "0",
                     "-q"]) == 0
    tagged = [json.loads(line)["path"] for line in table.read_text().splitlines()]
    assert [Path(p).relative_to(pics).as_posix() for p in tagged] == EXPECTED

    store = ReviewStore(pics, predictions={}, names=["red_background"], categories={},
                        thresholds={})
    assert store.relative == EXPECTED

    out = tmp_path / "shards"
    assert prep_main(["make-shards", "--folder", str(pics), "--out", str(out),
                      "--image-size", "32", "--workers", "1", "-q"]) == 0
    paths = [p for f in sorted(out.glob("*/*.parquet"))
             for p in pq.read_table(f).column("image_path").to_pylist()]
    assert sorted(paths) == sorted(EXPECTED)
