"""make-shards images: hostile files become statuses, conversions are right, every resize mode
and format round-trips through the shards."""

from __future__ import annotations

import io
import json
import resource
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from support.shard_builds import (
    encode,
    exif_rotated_jpeg,
    halves,
    hostile_corpus,
    make_shards,
    members,
    png_bomb,
    rows_of,
)

from prep.imaging import ImageRejected, ImageSettings, plan_geometry, process_image
from shards import read_shards

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB"
        return np.asarray(im).astype(int)


def near(pixel, colour, tolerance=24) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel) - np.asarray(colour)) <= tolerance))


def test_hostile_files_are_recorded_and_counted_never_fatal(tmp_path, capsys):
    expected = hostile_corpus(tmp_path / "in")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, err = make_shards(capsys, "--folder", str(tmp_path / "in"), "--out",
                            str(tmp_path / "out"), "--val-fraction", "0")
    assert code == 0, err
    # the 30000x30000 bomb was refused from its header: no 2.7 GB decode happened
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 400_000  # KiB
    rows = rows_of(tmp_path / "out")
    got = {r["image_path"].split("/")[-1]: r for r in rows}
    assert {name: r["status"] for name, r in got.items()} == expected
    for row in rows:
        assert (row["error_message"] is None) == (row["status"] == "success"), row
    assert "30000x30000" in got["bomb.png"]["error_message"]
    assert "GIF" in got["animated.gif"]["error_message"]
    stats = json.loads((tmp_path / "out/train/00000_stats.json").read_text())
    assert stats["status"] == dict(Counter(expected.values()))
    assert stats["successes"] == 5 and stats["failed"] == 5
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    assert manifest["status"] == dict(sorted(Counter(expected.values()).items()))
    names = [name for name, _ in members(tmp_path / "out/train/00000.tar")]
    assert sorted(names) == sorted(f"{got[n]['key']}.{ext}" for n, s in expected.items()
                                   if s == "success" for ext in ("jpg", "json"))


def test_conversions_to_rgb():
    settings = ImageSettings(size=64, resize_mode="none")
    cmyk = encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG", quality=95)
    assert near(pixels(process_image(cmyk, settings).data)[20, 20], RED)
    gray16 = encode(Image.fromarray(np.full((30, 40), 32768, dtype=np.uint16)), "PNG")
    assert near(pixels(process_image(gray16, settings).data)[15, 20], (128, 128, 128), 3)
    palette = Image.new("P", (40, 40), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(0, (0, 0, 20, 40))
    out = pixels(process_image(encode(palette, "PNG", transparency=0), settings).data)
    assert near(out[20, 5], WHITE) and near(out[20, 35], RED)  # transparent black -> white
    rgba = halves((40, 40), (0, 0, 255, 0), (0, 0, 255, 255), mode="RGBA")
    out = pixels(process_image(encode(rgba, "PNG"), settings).data)
    assert near(out[20, 5], WHITE) and near(out[20, 35], BLUE)


def test_exif_orientation_is_applied():
    image = process_image(exif_rotated_jpeg(), ImageSettings(size=64, resize_mode="none"))
    assert (image.width, image.height) == (20, 40)  # displayed portrait
    assert (image.original_width, image.original_height) == (20, 40)
    out = pixels(image.data)
    assert near(out[5, 10], RED) and near(out[35, 10], BLUE)  # left half went to the top
    padded = pixels(process_image(exif_rotated_jpeg(), ImageSettings(size=64)).data)
    assert padded.shape == (64, 64, 3)
    assert near(padded[32, 4], WHITE) and near(padded[8, 32], RED) and near(padded[56, 32], BLUE)


def test_animated_first_frame_and_pixel_cap():
    frames = [Image.new("RGB", (32, 32), c) for c in (RED, BLUE)]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0)
    with pytest.raises(ImageRejected) as skipped:
        process_image(gif, ImageSettings(size=64))
    assert skipped.value.status == "skipped_animated"
    first = process_image(gif, ImageSettings(size=64, animated="first-frame"))
    assert near(pixels(first.data)[32, 32], RED)
    with pytest.raises(ImageRejected) as big:
        process_image(encode(Image.new("RGB", (100, 100)), "PNG"),
                      ImageSettings(max_pixels=9_999))
    assert big.value.status == "failed_too_large" and "10,000 pixels" in big.value.message
    with pytest.raises(ImageRejected) as bomb:
        process_image(png_bomb(), ImageSettings())
    assert bomb.value.status == "failed_too_large"


@pytest.mark.parametrize(("mode", "landscape", "portrait"), [
    ("pad", ((64, 64), (64, 32)), ((64, 64), (32, 64))),
    ("keep_ratio", ((128, 64), (128, 64)), ((64, 128), (64, 128))),
    ("center_crop", ((64, 64), (64, 64)), ((64, 64), (64, 64))),
    ("none", ((120, 60), (120, 60)), ((50, 100), (50, 100))),
])
def test_geometry(mode, landscape, portrait):
    for (w, h), (canvas, scaled) in (((120, 60), landscape), ((50, 100), portrait)):
        geometry = plan_geometry(w, h, ImageSettings(size=64, resize_mode=mode))
        assert (geometry.canvas, geometry.scaled) == (canvas, scaled)
    small = plan_geometry(20, 10, ImageSettings(size=64, upscale=False))
    assert (small.canvas, small.scaled, small.offset) == ((64, 64), (20, 10), (22, 27))


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
@pytest.mark.parametrize("mode", ["pad", "keep_ratio", "center_crop", "none"])
def test_round_trip_every_mode_and_format(tmp_path, capsys, mode, fmt):
    folder = tmp_path / "in" / "things"
    folder.mkdir(parents=True)
    # left half red, right half blue; wide and tall, PNG and JPEG sources
    (folder / "wide.png").write_bytes(encode(halves((120, 60), RED, BLUE), "PNG"))
    (folder / "tall.jpg").write_bytes(encode(halves((50, 100), RED, BLUE, vertical=True),
                                             "JPEG", quality=95))
    code, err = make_shards(capsys, "--folder", str(tmp_path / "in"), "--out",
                            str(tmp_path / "out"), "--resize-mode", mode, "--format", fmt,
                            "--val-fraction", "0")
    assert code == 0, err
    expected = {"pad": {"wide": (64, 64), "tall": (64, 64)},
                "keep_ratio": {"wide": (128, 64), "tall": (64, 128)},
                "center_crop": {"wide": (64, 64), "tall": (64, 64)},
                "none": {"wide": (120, 60), "tall": (50, 100)}}[mode]
    samples = list(read_shards(tmp_path / "out", "train"))
    assert len(samples) == 2
    for sample in samples:
        meta, image = sample["meta"], sample["image"]
        name = meta["image_path"].split("/")[-1].split(".")[0]
        assert sample["format"] == fmt
        assert image.shape == (*expected[name][::-1], 3) and image.dtype == np.uint8
        assert (meta["width"], meta["height"]) == expected[name]
        assert meta["labels"] == ["things"] and meta["label_ids"] == [0]
        h, w = image.shape[:2]
        first, second = ((image[h // 4, w // 2], image[3 * h // 4, w // 2]) if name == "tall"
                         else (image[h // 2, w // 4], image[h // 2, 3 * w // 4]))
        if not (mode == "center_crop" and name == "wide"):
            assert near(first, RED, 40) and near(second, BLUE, 40), (name, first, second)
        if mode == "pad" and name == "wide":
            assert near(image[4, 32], WHITE, 8) and near(image[60, 32], WHITE, 8)
        if mode == "center_crop" and name == "wide":  # the centre square straddles both halves
            assert near(image[32, 4], RED, 40) and near(image[32, 60], BLUE, 40)
