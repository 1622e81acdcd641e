"""`train export --format wd`: a run back out as a WD v3 tagger folder (issue 24, part 5).

timm's own `create_model("local-dir:...", pretrained=True)` loads the exported folder, and on
the WD preprocessing (built with PIL in wd_fixtures) gives the scores `tag` gives on the run;
`train --init-from` on the export gives them once more (the round trip), and dghs-imgutils, a
real consumer, runs the folder's `model.onnx` to the same scores. Both for a run
started from a WD folder (a BGR model) and for a timm run trained on RGB from scratch, whose
first convolution the export turns to BGR.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from support import wd_consumer
from support.train_fixtures import emulator_shards
from support.wd_fixtures import (
    FOLDERS,
    SIDE,
    reference_scores,
    train_from,
    write_pictures,
    write_wd_folder,
)

from train.cli import main
from train.run import Run
from train.runs import load_run
from train.settings import TrainSettings
from train.tag.inference import predict
from train.tag.wd_model import WdModel, load_model, predict_any

pytest.importorskip("timm")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return emulator_shards(tmp_path_factory.mktemp("wd-v3") / "shards", posts=120, size=SIDE)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return write_pictures(tmp_path_factory.mktemp("wd-v3-pictures"))


def tag_scores(run, pictures) -> tuple[list[str], np.ndarray]:
    loaded = load_run(run, device="cpu", precision="fp32")
    scores = np.concatenate([b.scores for b in predict(loaded, pictures, batch_size=2,
                                                       workers=0)])
    return loaded.names, scores


def by_name(names: list[str], scores: np.ndarray, order: list[str]) -> np.ndarray:
    return scores[:, [names.index(n) for n in order]]


def exported(run, out):
    assert main(["export", "--model", str(run), "--format", "wd", "--out", str(out),
                 "-q"]) == 0
    with (out / "selected_tags.csv").open() as f:
        rows = list(csv.DictReader(f))
    return [r["name"] for r in rows], [int(r["category"]) for r in rows]


def check_round_trip(run, tmp_path, shards, pictures):
    names, ours = tag_scores(run, pictures)
    folder = tmp_path / "export"
    wd_names, categories = exported(run, folder)
    assert sorted(wd_names) == sorted(names)
    # published order: ratings, then general, then characters
    groups = [{9: 0, 0: 1, 4: 2}[c] for c in categories]
    assert groups == sorted(groups)
    config = json.loads((folder / "config.json").read_text())
    assert config["num_classes"] == len(wd_names)
    assert (folder / "model.onnx").is_file()

    want = reference_scores(folder, pictures)              # timm's local-dir, WD preprocessing
    np.testing.assert_allclose(by_name(names, ours, wd_names), want, atol=1e-5, rtol=0)
    onnx = load_model(folder, device="cpu")                  # `tag --model FOLDER`: the ONNX
    assert isinstance(onnx, WdModel)
    got = np.concatenate([b.scores for b in predict_any(onnx, pictures, batch_size=2, workers=0)])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    if wd_consumer.installed():   # make test installs it; test_export_wd says when it is not
        theirs = wd_consumer.run_consumer(folder / "model.onnx", pictures)["probs"]
        np.testing.assert_allclose(np.array(theirs, dtype=np.float32), want, atol=1e-4, rtol=0)

    again = train_from(folder, shards, tmp_path / "again")   # --init-from the export
    names2, ours2 = tag_scores(again, pictures)
    np.testing.assert_allclose(by_name(names2, ours2, wd_names), want, atol=1e-5, rtol=0)


@pytest.mark.heavy          # the RGB timm run below takes the same export path in make test
def test_a_run_from_a_wd_folder_exports_a_folder_timm_loads(tmp_path, shards, pictures):
    architecture, args = FOLDERS["vit"]
    folder = write_wd_folder(tmp_path / "wd", architecture, args)
    run = train_from(folder, shards, tmp_path / "run")
    check_round_trip(run, tmp_path, shards, pictures)


def test_an_rgb_timm_run_exports_a_bgr_folder(tmp_path, shards, pictures):
    torch.set_num_threads(1)
    run = tmp_path / "run"
    Run(TrainSettings(shards=str(shards), out=str(run), model="timm:convnext_atto",
                      weights="none", image_size=SIDE, epochs=1, batch_size=16, workers=0,
                      log_every=0, checkpoint_every=0, max_steps=2, keep="last",
                      device="cpu")).fit()
    assert json.loads((run / "config.json").read_text())["normalization"]["channel_order"] \
        == "RGB"
    check_round_trip(run, tmp_path, shards, pictures)


def test_a_torchvision_run_is_refused_in_one_line(tmp_path_factory, tmp_path, capsys):
    from support.train_fixtures import tiny_run
    run = tiny_run(tmp_path_factory, tmp_path / "tv")
    assert main(["export", "--model", str(run), "--format", "wd", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "timm model with a linear head" in err[0]
    assert not (run / "wd-v3").exists()
