"""`tag --top-k/--mcut/--exclude/--replace`: hand-computed cases, and the WD reference's MCut."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pytest

from train.errors import TrainError
from train.runs import Tag
from train.tag.selection import (
    Picker,
    add_selection_flags,
    clean,
    mcut_limits,
    mcut_threshold,
    parse_exclude,
    parse_replace,
    picker_from,
    top_k,
)


def reference_mcut(probs: np.ndarray) -> float:
    """The wd-tagger space's app.py `mcut_threshold`, as dghs-imgutils also has it."""
    sorted_probs = probs[probs.argsort()[::-1]]
    difs = sorted_probs[:-1] - sorted_probs[1:]
    t = difs.argmax()
    return (sorted_probs[t] + sorted_probs[t + 1]) / 2


@dataclass
class FakeRun:
    """What `select` reads of a run: names, categories, task."""

    names: list
    categories: np.ndarray
    task: str = "multilabel"
    positive: str | None = None


def test_mcut_by_hand():
    # sorted: 0.9 0.8 0.3 0.2 -> gaps 0.1 0.5 0.1 -> cut at (0.8 + 0.3) / 2 = 0.55
    assert mcut_threshold(np.array([0.3, 0.9, 0.2, 0.8])) == pytest.approx(0.55)
    # one clear winner: 0.95 | 0.4 0.35 -> (0.95 + 0.4) / 2
    assert mcut_threshold(np.array([0.35, 0.95, 0.4])) == pytest.approx(0.675)
    # ties: the first largest gap from the top wins, as numpy's argmax
    assert mcut_threshold(np.array([0.9, 0.6, 0.3])) == pytest.approx(0.75)
    assert mcut_threshold(np.array([0.7])) == pytest.approx(0.7)
    assert mcut_threshold(np.array([])) == float("inf")


def test_mcut_matches_the_reference_on_random_scores():
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = rng.random(rng.integers(2, 50)).astype(np.float32)
        assert mcut_threshold(p) == pytest.approx(float(reference_mcut(p)), abs=1e-7)


def test_mcut_per_category_keeps_what_the_reference_keeps():
    names = ["general", "sensitive", "a", "b", "c", "d", "char_x", "char_y", "artist_z"]
    cats = np.array([9, 9, 0, 0, 0, 0, 4, 4, 1])
    run = FakeRun(names, cats)
    scores = np.array([0.2, 0.7, 0.9, 0.8, 0.3, 0.2, 0.12, 0.05, 0.6])
    limits = mcut_limits(scores, cats, np.full(9, 0.5), "all")
    # general: cut 0.55 -> a, b; character: cut (0.12 + 0.05) / 2 = 0.085 raised to 0.15 ->
    # nothing; the single artist tag is kept; ratings keep their limit and pick the best.
    chosen = Picker(mcut="all").pick(run, scores, np.full(9, 0.5))
    assert [t.name for t in chosen] == ["a", "b", "sensitive", "artist_z"]
    assert limits[0] == 0.5 and limits[6] == pytest.approx(0.15)
    # the reference keeps scores strictly over the cut: equal scores all go
    flat = np.array([0.2, 0.7, 0.4, 0.4, 0.4, 0.4, 0.1, 0.1, 0.6])
    assert [t.name for t in Picker(mcut="general").pick(run, flat, np.full(9, 0.5))] == \
        ["sensitive", "artist_z"]


def test_mcut_general_only_leaves_character_thresholds():
    run = FakeRun(["a", "b", "c", "x", "y"], np.array([0, 0, 0, 4, 4]))
    scores = np.array([0.9, 0.5, 0.45, 0.6, 0.3])
    chosen = Picker(mcut="general").pick(run, scores, np.array([0.99, 0.99, 0.99, 0.25, 0.25]))
    assert [t.name for t in chosen] == ["a", "x", "y"]     # general cut 0.7; characters >= 0.25


def test_top_k_per_category_keeps_the_rating():
    tags = [Tag("a", 0, 0.9), Tag("x", 4, 0.85), Tag("b", 0, 0.8), Tag("c", 0, 0.7),
            Tag("sensitive", 9, 0.6), Tag("y", 4, 0.5), Tag("d", 0, 0.4)]
    assert [t.name for t in top_k(tags, 2)] == ["a", "x", "b", "sensitive", "y"]
    assert [t.name for t in top_k(tags, 1)] == ["a", "x", "sensitive"]
    assert top_k(tags, 10) == tags


def test_top_k_after_the_threshold():
    run = FakeRun(["a", "b", "c", "d"], np.array([0, 0, 0, 0]))
    scores = np.array([0.3, 0.9, 0.6, 0.8])
    assert [t.name for t in Picker(top_k=2).pick(run, scores, np.full(4, 0.5))] == ["b", "d"]
    assert [t.name for t in Picker(top_k=3).pick(run, scores, np.full(4, 0.7))] == ["b", "d"]


def test_exclude_and_replace_in_either_spelling():
    tags = [Tag("long_hair", 0, 0.9), Tag("solo", 0, 0.8), Tag("1girl", 0, 0.7),
            Tag("simple_background", 0, 0.6), Tag("woman", 0, 0.5)]
    out = clean(tags, {"solo", "simple background"}, {"long hair": "hair", "1girl": "woman"})
    assert [(t.name, t.score) for t in out] == [("hair", 0.9), ("woman", 0.7)]


def test_parsing_and_usage_errors(tmp_path):
    assert parse_replace(["a=b", " c = d "]) == {"a": "b", "c": "d"}
    with pytest.raises(TrainError, match="OLD=NEW"):
        parse_replace(["nothing"])
    f = tmp_path / "bad.txt"
    f.write_text("watermark\nsignature, text\n\n")
    assert parse_exclude("solo, ,1girl", f) == {"solo", "1girl", "watermark", "signature",
                                                "text"}
    with pytest.raises(TrainError, match="--exclude-file"):
        parse_exclude(None, tmp_path / "none.txt")
    p = argparse.ArgumentParser()
    for flag in ("--threshold", "--general-threshold", "--character-threshold"):
        p.add_argument(flag, type=float)
    p.add_argument("--per-tag-thresholds", action="store_true")
    add_selection_flags(p)
    assert picker_from(p.parse_args(["--mcut"]), "multilabel").mcut == "all"
    for argv, message in ((["--top-k", "0"], "at least 1"),
                          (["--mcut", "--threshold", "0.3"], "replaces the thresholds"),
                          (["--mcut", "general", "--general-threshold", "0.3"], "replaces"),
                          (["--exclude", "x"], "multilabel")):
        with pytest.raises(TrainError, match=message):
            picker_from(p.parse_args(argv), "binary" if message == "multilabel"
                        else "multilabel")
    assert picker_from(p.parse_args(["--mcut", "character", "--general-threshold", "0.3"]),
                       "multilabel").mcut == "character"
