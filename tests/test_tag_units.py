"""The pieces of `tag` without a trained model: captions, selection, sorting, image loading."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from train.errors import TrainError
from train.runs import NEGATIVE, LoadedRun, Tag, select, thresholds
from train.tag.captions import CaptionStyle, caption, format_tag, write_caption
from train.tag.inference import input_images, load_picture
from train.tag.sorting import Sorter, folder_name


# -- captions ------------------------------------------------------------------------------
def test_underscores_become_spaces_except_in_short_emoticon_tags():
    style = CaptionStyle(underscores_to_spaces=True)
    assert format_tag("long_hair", style) == "long hair"
    assert format_tag("^_^", style) == "^_^"
    assert format_tag(">_<", style) == ">_<"
    assert format_tag("o_o_", style) == "o o "          # longer than 3: replaced
    assert format_tag("long_hair", CaptionStyle()) == "long_hair"


def test_escaping_parentheses_for_prompts():
    style = CaptionStyle(escape_parentheses=True, underscores_to_spaces=True)
    assert format_tag("star_(symbol)", style) == r"star \(symbol\)"
    assert format_tag(r"a\b", CaptionStyle(escape_parentheses=True)) == r"a\\b"
    assert format_tag("star_(symbol)", CaptionStyle()) == "star_(symbol)"


TAGS = [Tag("solo", 0, 0.9), Tag("hatsune_miku", 4, 0.7), Tag("general", 9, 0.95),
        Tag("long_hair", 0, 0.8), Tag("kaito", 4, 0.5)]


def test_caption_order_trigger_rating_and_characters():
    assert caption(TAGS, CaptionStyle()) == "solo, long_hair, hatsune_miku, kaito"
    assert caption(TAGS, CaptionStyle(character_first=True)) == \
        "hatsune_miku, kaito, solo, long_hair"
    assert caption(TAGS, CaptionStyle(rating="first", trigger="mona")) == \
        "mona, general, solo, long_hair, hatsune_miku, kaito"
    assert caption(TAGS, CaptionStyle(rating="last", underscores_to_spaces=True)) == \
        "solo, long hair, hatsune miku, kaito, general"


def test_caption_drops_the_negative_label_and_duplicates_of_the_trigger():
    assert caption([Tag("not_mona", NEGATIVE, 0.9)], CaptionStyle(trigger="x")) == "x"
    assert caption([Tag("mona", 0, 0.9), Tag("solo", 0, 0.8)],
                   CaptionStyle(trigger="mona")) == "mona, solo"


def test_existing_captions_are_kept_unless_overwrite(tmp_path):
    image = tmp_path / "a.jpg"
    image.write_bytes(b"")
    style = CaptionStyle()
    assert write_caption(image, "one, two", style) == "written"
    assert (tmp_path / "a.txt").read_text() == "one, two\n"
    assert write_caption(image, "three", style) == "kept"
    assert (tmp_path / "a.txt").read_text() == "one, two\n"
    assert write_caption(image, "three", style, overwrite=True) == "replaced"
    assert (tmp_path / "a.txt").read_text() == "three\n"
    assert write_caption(image, "x", CaptionStyle(extension=".caption")) == "written"
    assert (tmp_path / "a.caption").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.caption", "a.jpg", "a.txt"]


# -- thresholds and selection -----------------------------------------------------------------
def _run(tmp_path, task="multilabel", categories=(0, 0, 4, 9, 9), positive=None,
         per_tag=None) -> LoadedRun:
    tags = [{"tag_id": -1, "name": n, "category": c, "count": 1}
            for n, c in zip(["a", "b", "chara", "general", "explicit"], categories,
                            strict=True)]
    if per_tag is not None:
        (tmp_path / "eval.json").write_text(json.dumps({"per_tag": {"threshold": per_tag}}))
    return LoadedRun(path=tmp_path, model=None, tags=tags, config={"threshold": 0.4}, task=task,
                     positive=positive, image_size=32, resize="pad", device=torch.device("cpu"),
                     precision="fp32")


def test_global_threshold_and_the_rating_argmax(tmp_path):
    run = _run(tmp_path)
    scores = np.array([0.9, 0.3, 0.5, 0.2, 0.6])
    limits = thresholds(run)
    assert limits.tolist() == [0.4] * 5
    assert [t.name for t in select(run, scores, limits)] == ["a", "explicit", "chara"]
    assert [t.name for t in select(run, scores, thresholds(run, 0.95))] == ["explicit"]
    assert [t.name for t in select(run, scores, thresholds(run, 0.0))] == \
        ["a", "explicit", "chara", "b"]                  # never two ratings


def test_per_tag_and_per_category_thresholds(tmp_path):
    run = _run(tmp_path, per_tag=[0.95, 0.1, 0.6, 0.5, 0.5])
    scores = np.array([0.9, 0.3, 0.5, 0.2, 0.6])
    assert [t.name for t in select(run, scores, thresholds(run, per_tag=True))] == \
        ["explicit", "b"]
    limits = thresholds(run, 0.4, general=0.95, character=0.1)
    assert limits.tolist() == [0.95, 0.95, 0.1, 0.4, 0.4]
    assert [t.name for t in select(run, scores, limits)] == ["explicit", "chara"]
    (tmp_path / "eval.json").write_text(json.dumps({"step": 3}))
    with pytest.raises(TrainError, match="no per-tag thresholds"):
        thresholds(run, per_tag=True)


def test_binary_and_multiclass_selection(tmp_path):
    binary = _run(tmp_path, "binary", positive="b")
    limits = thresholds(binary)
    assert limits.tolist() == [0.5]
    assert select(binary, np.array([0.7]), limits) == [Tag("b", 0, 0.7)]
    negative = select(binary, np.array([0.2]), limits)
    assert negative[0].name == "not_b" and negative[0].category == NEGATIVE
    assert negative[0].score == pytest.approx(0.8)
    multi = _run(tmp_path, "multiclass")
    assert [t.name for t in select(multi, np.array([.1, .1, .6, .1, .1]), thresholds(multi))] \
        == ["chara"]


# -- sorting -------------------------------------------------------------------------------
def _files(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(name.encode())
    return [folder / n for n in names]


def test_sort_dry_run_changes_nothing(tmp_path):
    a, b = _files(tmp_path / "in", ["a.jpg", "b.jpg"])
    sorter = Sorter(tmp_path / "out")
    assert sorter.add(a, "mona") == tmp_path / "out" / "mona" / "a.jpg"
    sorter.add(b, "not_mona")
    assert not (tmp_path / "out").exists()
    assert dict(sorter.counts) == {"mona": 1, "not_mona": 1}


def test_sort_never_overwrites_and_suffixes_name_clashes(tmp_path):
    first = _files(tmp_path / "x", ["a.jpg"])[0]
    second = _files(tmp_path / "y", ["a.jpg"])[0]
    (tmp_path / "out" / "mona").mkdir(parents=True)
    (tmp_path / "out" / "mona" / "a.jpg").write_bytes(b"already here")
    sorter = Sorter(tmp_path / "out", apply=True)
    assert sorter.add(first, "mona").name == "a_1.jpg"
    assert sorter.add(second, "mona").name == "a_2.jpg"
    assert (tmp_path / "out" / "mona" / "a.jpg").read_bytes() == b"already here"
    assert (tmp_path / "out" / "mona" / "a_2.jpg").read_bytes() == b"a.jpg"
    assert first.exists() and second.exists()              # copies keep the sources


def test_sort_move_takes_the_caption_along(tmp_path):
    image = _files(tmp_path / "in", ["a.png"])[0]
    (tmp_path / "in" / "a.txt").write_text("red, solo")
    target = Sorter(tmp_path / "out", move=True, apply=True).add(image, "red")
    assert target.read_bytes() == b"a.png" and not image.exists()
    assert (tmp_path / "out" / "red" / "a.txt").read_text() == "red, solo"
    assert not (tmp_path / "in" / "a.txt").exists()


def test_folder_names_are_one_safe_path_component():
    assert folder_name("star_(symbol)") == "star_(symbol)"
    assert folder_name("a/b") == "a_b" and folder_name("..") == "_" and folder_name("") == "_"


# -- finding and loading images -------------------------------------------------------------
def test_input_images_recurses_dedupes_and_skips_the_sort_folder(tmp_path):
    _files(tmp_path / "in" / "sub", ["b.PNG", "notes.txt"])
    _files(tmp_path / "in", ["a.jpg"])
    _files(tmp_path / "in" / "sorted" / "red", ["c.jpg"])
    found = input_images([tmp_path / "in", tmp_path / "in" / "a.jpg"],
                        exclude=[tmp_path / "in" / "sorted"])
    assert [p.relative_to(tmp_path / "in").as_posix() for p in found] == ["a.jpg", "sub/b.PNG"]
    with pytest.raises(TrainError, match="no such file or folder"):
        input_images([tmp_path / "missing"])


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **kw)
    return out.getvalue()


def test_pictures_are_padded_onto_white_and_alpha_is_flattened_onto_white():
    red = Image.new("RGB", (40, 20), (255, 0, 0))
    x = load_picture(_encode(red, "PNG"), 16, "pad")
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8
    assert x[:, 0, 0].tolist() == [255, 255, 255]           # padding above the picture
    assert x[:, 8, 8].tolist() == [255, 0, 0]
    clear = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert load_picture(_encode(clear, "PNG"), 8).min() == 255
    crop = load_picture(_encode(red, "PNG"), 16, "center_crop")
    assert crop[:, 0, 0].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))                  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6                                       # displayed rotated 90° clockwise
    x = load_picture(_encode(im, "JPEG", exif=exif, quality=95), 20, "keep_ratio")
    assert x[0, 2, 10] > 200 and x[2, 2, 10] < 60           # red is on top now
    assert x[2, 18, 10] > 200                              # blue at the bottom


def test_a_corrupt_file_raises():
    with pytest.raises(Exception):  # noqa: B017 - whatever Pillow raises; the loader catches it
        load_picture(b"\xff\xd8\xff\xe0 not really a jpeg", 16)
