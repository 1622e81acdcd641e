"""One picture: `tag` makes exactly the pictures `prep make-shards` stored, for every setting.

The same source files go through `make-shards` (real CLI, folder input) and through `tag`'s
preparation (`train.runs.preparation` from a run config that records the shards'
image settings, as `train` writes it). Encoding tag's picture with the shards' settings gives
the shard's bytes exactly, so the pixels before encoding were the same.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from prep.cli import main as prep_main
from prep.imaging import encode, prepare_picture
from shards.manifest import read_manifest
from shards.reader import read_shards
from train.runs import preparation
from train.tag.inference import load_picture


def _save(im: Image.Image, path: Path, fmt: str, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt, **kw)


def _sources(root: Path) -> Path:
    """Pictures that exercise every step: EXIF, alpha, palette, 16-bit, CMYK, small sizes."""
    rng = np.random.default_rng(3)
    noise = lambda w, h: Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8))  # noqa: E731
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(noise(60, 40), root / "a" / "rotated.jpg", "JPEG", exif=exif, quality=95)
    rgba = noise(30, 50).convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 255, (50, 30), np.uint8)))
    _save(rgba, root / "a" / "alpha.png", "PNG")
    _save(noise(24, 24).quantize(16), root / "b" / "palette.gif", "GIF", transparency=0)
    deep = Image.fromarray(rng.integers(0, 65535, (30, 40), np.uint16))
    _save(deep, root / "b" / "deep.png", "PNG")
    _save(noise(50, 50).convert("CMYK"), root / "b" / "cmyk.jpg", "JPEG", quality=95)
    _save(noise(10, 14), root / "a" / "small.png", "PNG")
    return root


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    return _sources(tmp_path_factory.mktemp("pictures"))


@pytest.mark.parametrize("flags", [
    ["--resize-mode", "pad"], ["--resize-mode", "keep_ratio"],
    ["--resize-mode", "center_crop"], ["--resize-mode", "none"],
    ["--resize-mode", "pad", "--no-upscale"], ["--resize-mode", "center_crop", "--no-upscale"],
    ["--resize-mode", "keep_ratio", "--no-upscale", "--format", "webp"],
])
def test_tag_makes_the_pictures_make_shards_stored(sources, tmp_path, flags):
    out = tmp_path / "shards"
    assert prep_main(["make-shards", "--folder", str(sources), "--out", str(out),
                      "--image-size", "32", "--val-fraction", "0", "-q", *flags]) == 0
    manifest = read_manifest(out)
    config = {"image_size": 32, "preparation": manifest["image"]}   # as `train` records it
    settings = preparation(config, 32)
    rows = [r for p in sorted((out / "train").glob("*.parquet"))
            for r in pq.read_table(p).to_pylist()]
    paths = {r["key"]: r["image_path"] for r in rows if r["status"] == "success"}
    assert len(paths) == 6
    for sample in read_shards(out, "train", image="bytes"):
        source = (sources / paths[sample["__key__"]]).read_bytes()
        picture = prepare_picture(source, settings).picture
        assert encode(picture, settings) == sample["image"], paths[sample["__key__"]]
        stored = Image.open(io.BytesIO(sample["image"]))
        assert picture.size == stored.size == (sample["meta"]["width"], sample["meta"]["height"])
        if "--no-upscale" in flags and paths[sample["__key__"]].endswith("small.png"):
            # what tag made before it read the run's settings: the picture enlarged
            enlarged = prepare_picture(source, replace(settings, upscale=True)).picture
            assert encode(enlarged, settings) != sample["image"]


def test_an_old_run_without_recorded_settings_keeps_the_old_preparation(sources):
    settings = preparation({"image_size": 24, "shards": "/nowhere"}, 24)
    assert (settings.size, settings.resize_mode, settings.upscale) == (24, "pad", True)
    x = load_picture((sources / "a" / "small.png").read_bytes(), 24, settings=settings)
    assert x.shape == (3, 24, 24)
    assert x[:, 12, 0].tolist() == [255, 255, 255]      # 10 x 14 enlarged to 17 x 24, padded


def test_a_recorded_preparation_is_resized_to_the_image_size_as_training_evaluates(sources):
    config = {"image_size": 16, "preparation": {"size": 32, "resize_mode": "pad",
                                                "upscale": False, "background": "white"}}
    settings = preparation(config, 16)
    assert (settings.size, settings.upscale, settings.animated) == (32, False, "first-frame")
    x = load_picture((sources / "a" / "small.png").read_bytes(), 16, settings=settings)
    assert x.shape == (3, 16, 16)
    assert x[:, 0, 0].tolist() == [255, 255, 255]        # the small picture sits in white
