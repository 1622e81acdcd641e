"""train/runs.py: a loaded run speaks prep's resize-mode names, and every reader of it says the
one the shards' manifest recorded (issue 22: one meaning per name)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from support.train_fixtures import tiny_run

from prep.imaging import RESIZE_MODES
from train.errors import TrainError
from train.report.cli import _summary
from train.report.scores import ValScores
from train.runs import LoadedRun, load_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory, tmp_path_factory.mktemp("runs") / "copy")


def recorded_as(run_dir, tmp_path, mode: str):
    """A copy of the run whose config.json records shards made with `--resize-mode mode`
    (what `train` copies from the manifest's image settings)."""
    copy = tmp_path / mode
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["preparation"] = {**(config.get("preparation") or {}), "size": 32,
                             "resize_mode": mode}
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize("mode", RESIZE_MODES)
def test_the_loaded_run_and_the_report_say_the_recorded_resize_mode(run_dir, tmp_path, mode):
    copy = recorded_as(run_dir, tmp_path, mode)
    run = load_run(copy, device="cpu")
    assert run.resize == mode and run.preparation.resize_mode == mode
    val = ValScores([], [], np.zeros((0, len(run.names)), np.float32),
                    np.zeros((0, len(run.names)), np.uint8))
    summary = dict(_summary(copy, run, "shards/", val, 0.0))
    assert summary["image size"] == f"32 px ({mode})"


def test_an_asked_resize_mode_replaces_the_recorded_one_and_a_wrong_name_is_refused(
        run_dir, tmp_path):
    copy = recorded_as(run_dir, tmp_path, "pad")
    assert load_run(copy, device="cpu", resize="keep_ratio").resize == "keep_ratio"
    with pytest.raises(TrainError, match="resize mode 'stretch': not one of pad, keep_ratio"):
        load_run(copy, device="cpu", resize="stretch")


def test_a_loaded_run_is_built_by_keyword_only():
    with pytest.raises(TypeError):
        LoadedRun("run", None, [], {}, "multilabel", None, 32, "pad", "cpu", "fp32")
    with pytest.raises(TypeError):
        load_run("run", "cpu")


def test_fp16_predicts_as_fp32_does_within_half_precision(run_dir, tmp_path):
    """`tag --precision fp16` (now offered as in `train`) autocasts to float16: its scores
    are fp32's to half precision, and not bit for bit the same computation."""
    import torch
    from PIL import Image

    from train.tag.inference import predict
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(paths[-1])
    scores = {}
    for precision in ("fp32", "fp16"):
        run = load_run(run_dir, device="cpu", precision=precision)
        assert run.precision == precision
        scores[precision] = np.concatenate([b.scores for b in predict(run, paths, workers=0)])
    assert np.abs(scores["fp16"] - scores["fp32"]).max() < 1e-2
    assert not np.array_equal(scores["fp16"], scores["fp32"])
