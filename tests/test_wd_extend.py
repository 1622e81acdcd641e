"""Extending a tagger without forgetting, and forgetting measured (issue 24, parts 3 and 4).

A run that starts from a WD v3 folder (tests/support/wd_fixtures.py: a small random-weight
timm ViT in the published shape) and carries its tags trains the carried tags on the starting
model's own scores where the sample's labels do not name them (`--old-tags teacher`), 1 where
they do; the added tags on the labels. The references are independent: timm's own
`create_model("local-dir:...")` fed the WD preprocessing for the teacher's scores and the
starting model's mAP, the exported run through `tag`'s inference for the result's, and
scikit-learn's average_precision_score. The pictures are the shards' own 64 px JPEGs, at the
model's side, so no tool resizes them.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from support.train_fixtures import VISUAL, emulator_shards
from support.wd_fixtures import (
    ADDED,
    FOLDERS,
    OLD_CHARACTER,
    OLD_GENERAL,
    RATINGS,
    SIDE,
    reference_scores,
    write_wd_folder,
)

from train.run import Run
from train.settings import TrainSettings

pytest.importorskip("timm")
OLD = RATINGS + OLD_GENERAL + OLD_CHARACTER
NAMES = OLD + ADDED                      # the run's outputs with --keep-tags all
BASE = dict(epochs=1, batch_size=8, workers=0, log_every=0, checkpoint_every=0, lr=1e-3,
            keep="last", device="cpu", shuffle_buffer=50)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return emulator_shards(tmp_path_factory.mktemp("extend") / "shards", posts=60, size=SIDE)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    architecture, args = FOLDERS["vit"]
    return write_wd_folder(tmp_path_factory.mktemp("extend-wd") / "wd", architecture, args,
                           seed=2)


def pictures(shards: Path, into: Path, splits=("train",)) -> dict[str, tuple[Path, list[str]]]:
    """Each sample's JPEG written to `into` and its labels (the names make-shards recorded)."""
    into.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in splits:
        for tar in sorted((shards / split).glob("*.tar")):
            with tarfile.open(tar) as t:
                members = {m.name: t.extractfile(m).read() for m in t.getmembers()}
            for name, data in members.items():
                key, ext = name.rsplit(".", 1)
                if ext == "jpg":
                    path = into / f"{key}.jpg"
                    path.write_bytes(data)
                    out[key] = (path, json.loads(members[f"{key}.json"])["labels"])
    return out


class Capturing(Run):
    """A run that keeps the (keys, targets) of every training batch, as the loss saw them."""

    seen: list[tuple[list[str], torch.Tensor]]

    def _loop(self):
        loop = super()._loop()
        self.seen, keys = [], []
        trace = _KeyTrace(keys)
        loss = loop.loss_fn

        def recording(logits, targets):
            self.seen.append((list(keys[-1]), targets.detach().clone()))
            return loss(logits, targets)

        loop.loss_fn, loop.trace = recording, trace
        return loop


class _KeyTrace:
    """Stands in for the trace file: the loop writes each batch's keys before its step."""

    def __init__(self, keys: list):
        self.keys = keys

    def write(self, text: str) -> None:
        self.keys.append([line.split()[1] for line in text.splitlines()])


@pytest.mark.parametrize("old_tags", ["teacher", "labels"])
def test_training_targets_of_old_tags_come_from_the_teacher(old_tags, tmp_path, shards,
                                                            folder):
    run = Capturing(TrainSettings(shards=str(shards), out=str(tmp_path / "run"),
                                  init_from=str(folder), old_tags=old_tags, max_steps=3,
                                  **BASE))
    run.fit()
    images = pictures(shards, tmp_path / "pics")
    keys = sorted(images)
    want = reference_scores(folder, [images[k][0] for k in keys])      # timm's own model
    cache = tmp_path / "run" / "teacher.npz"
    if old_tags == "teacher":
        with np.load(cache) as f:
            cached = dict(zip(f["keys"].tolist(), f["scores"].astype(np.float32), strict=True))
        assert sorted(cached) == keys
        np.testing.assert_allclose(np.stack([cached[k] for k in keys]), want, atol=5e-4,
                                   rtol=0)      # float16 of the reference
        assert want.std() > 0.05
    else:
        assert not cache.exists()
    assert len(run.seen) == 3
    checked = 0
    for batch_keys, targets in run.seen:
        for key, target in zip(batch_keys, targets, strict=True):
            labels = set(images[key][1])
            for j, name in enumerate(NAMES):
                if name in labels:                       # named: 1, old or new
                    assert target[j] == 1.0
                elif name in ADDED or old_tags == "labels":
                    assert target[j] == 0.0
                else:                                    # old, not named: the teacher's
                    assert float(target[j]) == float(cached[key][OLD.index(name)])
                    checked += 1
    assert old_tags == "labels" or checked > 100


def test_resume_reuses_the_teacher_cache(tmp_path, shards, folder):
    settings = dict(shards=str(shards), init_from=str(folder),
                    **{**BASE, "epochs": 2, "checkpoint_every": 1})
    Run(TrainSettings(out=str(tmp_path / "whole"), **settings)).fit()
    cut = tmp_path / "cut"
    Run(TrainSettings(out=str(cut), max_steps=3, **settings)).fit()
    cache = cut / "teacher.npz"
    before = os.stat(cache)
    Run(TrainSettings(out=str(cut), resume=True, **settings)).fit()
    after = os.stat(cache)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    with np.load(cache) as mine, np.load(tmp_path / "whole" / "teacher.npz") as theirs:
        assert all(np.array_equal(mine[k], theirs[k]) for k in ("keys", "scores", "columns"))
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(cut / "model.safetensors"))
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.parametrize("freeze_backbone", [False, True])
def test_frozen_old_rows_stay_the_sources_bit_for_bit(freeze_backbone, tmp_path, shards,
                                                      folder):
    source = load_file(str(folder / "model.safetensors"))
    kept = {}
    for frozen, lr in ((True, 1e-2), (False, 1e-2), ("start", 0.0)):
        out = tmp_path / f"run-{frozen}"
        Run(TrainSettings(shards=str(shards), out=str(out), init_from=str(folder),
                          freeze_old_rows=frozen is True, freeze_backbone=freeze_backbone,
                          max_steps=4 if lr else 1, ema=0.5, weight_decay=0.5 if lr else 0.0,
                          **{**BASE, "lr": lr})).fit()
        kept[frozen] = load_file(str(out / "model.safetensors"))
    old, new = slice(0, len(OLD)), slice(len(OLD), len(NAMES))
    for part in ("weight", "bias"):
        name = f"head.1.{part}"
        assert torch.equal(kept[True][name][old], source[f"head.{part}"])   # bit-equal
        assert not torch.equal(kept[False][name][old], source[f"head.{part}"])  # else moved
        assert not torch.equal(kept[True][name][new], kept["start"][name][new])  # new train
    backbone = [k for k in source if not k.startswith("head.")]
    assert all(torch.equal(kept["start"][f"features.model.{k}"], source[k]) for k in backbone)
    moved = [k for k in backbone if not torch.equal(kept[True][f"features.model.{k}"],
                                                    source[k])]
    assert not moved if freeze_backbone else moved


def test_forgetting_is_measured_against_timm_and_sklearn(tmp_path, shards, folder):
    from sklearn.metrics import average_precision_score

    from train.report.cli import write_report
    from train.runs import load_run
    from train.tag.inference import predict

    # Pictures of every kind, labelled with the old and the new general tags.
    held_out = emulator_shards(tmp_path / "old-kind", posts=40, size=SIDE, seed=5,
                               tags=OLD_GENERAL + ADDED)
    out = tmp_path / "run"
    report = Run(TrainSettings(shards=str(shards), out=str(out), init_from=str(folder),
                               retention_shards=str(held_out), max_steps=3,
                               **{**BASE, "lr": 1e-2})).fit()
    record = json.loads((out / "eval.json").read_text())["retention"]
    assert record == report["retention"]

    images = pictures(held_out, tmp_path / "held-out", splits=("train", "val"))
    keys = sorted(images)
    paths = [images[k][0] for k in keys]
    truth = np.array([[name in images[k][1] for name in OLD] for k in keys], dtype=int)
    with_pos = truth.sum(0) > 0
    before = reference_scores(folder, paths)
    loaded = load_run(out, device="cpu", precision="fp32")
    scored = np.concatenate([b.scores for b in predict(loaded, paths, batch_size=8,
                                                       workers=0)])
    after = scored[:, [loaded.names.index(n) for n in OLD]]

    def mean_ap(scores):
        return np.mean([average_precision_score(truth[:, j], scores[:, j])
                        for j in np.flatnonzero(with_pos)])

    assert record["samples"] == len(keys)
    assert record["old_tags"] == int(with_pos.sum()) > 3
    assert record["map_before"] == pytest.approx(mean_ap(before), abs=1e-4)
    assert record["map_after"] == pytest.approx(mean_ap(after), abs=1e-4)
    assert record["drop"] == pytest.approx(record["map_before"] - record["map_after"])
    new_truth = np.array([[name in images[k][1] for name in ADDED] for k in keys], dtype=int)
    new_aps = [average_precision_score(new_truth[:, j], scored[:, loaded.names.index(name)])
               for j, name in enumerate(ADDED) if new_truth[:, j].any()]
    assert record["new_tags_held_out"] == len(new_aps) > 0
    assert record["new_tags_ap_held_out"] == pytest.approx(np.mean(new_aps), abs=1e-4)

    val = pictures(shards, tmp_path / "val", splits=("val",))
    vkeys = sorted(val)
    vscores = np.concatenate([b.scores for b in predict(loaded, [val[k][0] for k in vkeys],
                                                        batch_size=8, workers=0)])
    aps = [average_precision_score([name in val[k][1] for k in vkeys],
                                   vscores[:, loaded.names.index(name)])
           for name in ADDED if any(name in val[k][1] for k in vkeys)]
    assert record["new_tags"] == len(aps)
    assert record["new_tags_ap"] == pytest.approx(np.mean(aps), abs=1e-4)

    index = write_report(out, quiet=True, examples=2)
    html = Path(index).read_text()
    assert f"mAP {record['map_before']:.4f} before, {record['map_after']:.4f} after" in html
    assert f"new tags: AP {record['new_tags_ap']:.4f}" in html


def test_flags_of_an_extension_need_a_tagger(tmp_path, shards):
    from train.errors import TrainError
    for flag in ({"freeze_old_rows": True}, {"retention_shards": str(shards)},
                 {"old_tags": "teacher"}):
        with pytest.raises(TrainError, match="needs --init-from a tagger"):
            Run(TrainSettings(shards=str(shards), out=str(tmp_path / "r"), model="resnet18",
                              weights="none", image_size=16, max_steps=1, **flag,
                              **BASE)).fit()


def test_visual_names_are_the_shards():          # the fixture's assumption, checked
    assert set(OLD_GENERAL[:8]) | set(ADDED) == set(VISUAL)


def test_a_cache_of_other_shards_is_not_reused(tmp_path):
    from shards.manifest import Split
    from train.teacher import read_cache, record_of, write_cache

    split = Split(urls=["a/00000.tar"], samples=3, counts=[3])
    record = record_of("wd", ["circle"], split)
    path = tmp_path / "teacher.npz"
    write_cache(path, record, [4], ["k1", "k2", "k3"], np.array([[0.25], [0.5], [1.0]]))
    cached = read_cache(path, record)
    assert cached is not None and float(cached.row("k2")[0]) == 0.5
    other = record_of("wd", ["circle"], Split(urls=["a/00000.tar"], samples=4, counts=[4]))
    assert read_cache(path, other) is None
    assert read_cache(path, record_of("wd", ["square"], split)) is None


def test_help_says_how_a_caption_overrides_the_teacher():
    from train.cli import build_parser
    text = " ".join(build_parser().format_help().split())
    assert "a carried tag the sample's labels (captions) name is 1 instead, the caption " \
        "overrides the teacher" in text
    assert "--freeze-old-rows" in text and "--retention-shards DIR" in text


def test_unreadable_retention_shards_are_one_clear_error(tmp_path, shards, folder):
    from train.errors import TrainError
    with pytest.raises(TrainError, match=r"^--retention-shards .*missing"):
        Run(TrainSettings(shards=str(shards), out=str(tmp_path / "r"), init_from=str(folder),
                          old_tags="labels", retention_shards=str(tmp_path / "missing"),
                          max_steps=1, **BASE)).fit()
