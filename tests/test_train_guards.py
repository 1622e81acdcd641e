"""`train` refuses what would lose work or learn nothing, before the first step: a run folder
already in use, a binary run whose class would be a rating; and says when the training side
differs from the shards' pictures. Tiny shards of solid colours, resnet18 at 16 px on CPU."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
from PIL import Image
from support.train_fixtures import write_shards

from train.cli import main
from train.run import Run

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40)}
FAST = ["--arch", "resnet18", "--weights", "none", "--image-size", "16", "--epochs", "1",
        "--batch-size", "8", "--workers", "0", "--max-steps", "1", "--log-every", "0",
        "--checkpoint-every", "0", "--shuffle-buffer", "16", "--no-report", "-q"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _shards(root, tags, size=16):
    rng = np.random.default_rng(0)
    rows = {"train": [], "val": []}
    for i in range(24):
        name = list(COLOURS)[i % 2]
        pixels = np.clip(np.array(COLOURS[name]) + rng.integers(-20, 20, (size, size, 3)), 0, 255)
        out = io.BytesIO()
        Image.fromarray(pixels.astype(np.uint8)).save(out, "JPEG")
        rows["val" if i % 4 == 0 else "train"].append((f"{i:09d}", out.getvalue(),
                                                       {"tags": ["general", name]}))
    root = write_shards(root, rows, tags, per_shard=50)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["image"] = {"size": size}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return _shards(tmp_path_factory.mktemp("colours"), [("red", 0), ("green", 0)])


def _train(shards, out, *extra, arch: str = "resnet18") -> int:
    return main(["--stream", "--shards", str(shards), "--out", str(out),
                 *[arch if a == "resnet18" else a for a in FAST], *extra])


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_run_folder_in_use_is_refused_without_resume_or_overwrite(shards, tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(shards, run) == 0
    before = _files(run)
    assert "model.safetensors" in before and "config.json" in before
    capsys.readouterr()
    assert _train(shards, run, "--lr", "0.1") == 2
    err = capsys.readouterr().err
    assert err.startswith("train: error: ") and err.count("\n") == 1
    assert "--resume" in err and "--overwrite" in err and str(run) in err
    assert _files(run) == before                                  # nothing touched
    assert _train(shards, run, "--resume", "--overwrite") == 2     # they contradict
    assert _files(run) == before


def test_overwrite_deletes_the_old_run_before_anything_new_is_written(shards, tmp_path,
                                                                     monkeypatch):
    run = tmp_path / "run"
    assert _train(shards, run) == 0
    assert (run / "model.safetensors").exists()

    def killed(self):
        raise KeyboardInterrupt                                   # killed in the first step

    monkeypatch.setattr(Run, "_train", killed)
    assert _train(shards, run, "--overwrite", "--lr", "0.01") == 130
    config = json.loads((run / "config.json").read_text())
    assert config["lr"] == 0.01                                   # the new run's config ...
    assert not (run / "model.safetensors").exists()               # ... and no old model
    assert not (run / "eval.json").exists() and not (run / "metrics.csv").exists()
    monkeypatch.undo()
    assert _train(shards, run, "--overwrite") == 0
    assert (run / "model.safetensors").exists()


def test_overwrite_never_deletes_files_a_run_did_not_write(shards, tmp_path, capsys):
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    (folder / "config.json").write_text("{}")
    assert _train(shards, folder, "--overwrite") == 2
    assert "thesis.tex" in capsys.readouterr().err
    assert (folder / "thesis.tex").read_text() == "years of work"
    assert (folder / "config.json").read_text() == "{}"


def test_an_empty_folder_is_a_new_run(shards, tmp_path):
    (tmp_path / "run").mkdir()
    assert _train(shards, tmp_path / "run") == 0


def test_binary_without_positive_names_the_class_it_chose(shards, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="train"):
        assert _train(shards, tmp_path / "run", "--task", "binary") == 0
    said = [r.getMessage() for r in caplog.records if "--positive" in r.getMessage()]
    assert len(said) == 1 and "'red'" in said[0]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["positive"] == "red"


def test_binary_without_positive_refuses_a_rating_as_the_class(tmp_path, capsys):
    rated = _shards(tmp_path / "rated", [("general", 9), ("red", 0), ("green", 0)])
    assert _train(rated, tmp_path / "run", "--task", "binary") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--positive" in err and "'general'" in err
    assert "red" in err                                           # a class it could be
    assert not (tmp_path / "run").exists()
    assert _train(rated, tmp_path / "run", "--task", "binary", "--positive", "red") == 0


def test_an_image_size_other_than_the_shards_is_said_once(shards, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="train"):
        assert _train(shards, tmp_path / "a", "--image-size", "24", "--epochs", "2",
                      "--max-steps", "3") == 0
    said = [r.getMessage() for r in caplog.records if "--image-size" in r.getMessage()]
    assert len(said) == 1 and "24" in said[0] and "16 px" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="train"):
        assert _train(shards, tmp_path / "b") == 0                # 16 px, as the shards
    assert not [r for r in caplog.records if "--image-size" in r.getMessage()]


def test_layer_decay_on_a_cnn_is_one_line_and_a_timm_run_records_it(shards, tmp_path, capsys):
    assert _train(shards, tmp_path / "cnn", "--layer-decay", "0.75") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--layer-decay needs a timm backbone" in err[0]
    assert not (tmp_path / "cnn").exists()
    assert _train(shards, tmp_path / "vit", "--layer-decay", "0.75", arch="timm:test_vit") == 0
    assert json.loads((tmp_path / "vit" / "config.json").read_text())["layer_decay"] == 0.75


STACK = "resnet18+timm:tf_efficientnet_lite0"


def test_a_stack_of_backbones_trains_frozen_tags_and_is_no_wd_folder(shards, tmp_path,
                                                                      capsys):
    pytest.importorskip("timm")
    run = tmp_path / "stack"
    assert _train(shards, run, arch=STACK) == 2                 # not frozen: refused, nothing kept
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--freeze-backbone" in err[0] and not run.exists()
    assert _train(shards, run, "--freeze-backbone", arch=STACK) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == STACK and config["normalization"]["mean"] == [0.485, 0.456, 0.406]
    picture = tmp_path / "red.png"
    Image.new("RGB", (16, 16), COLOURS["red"]).save(picture)
    from train.tag.cli import main as tag_main
    assert tag_main(["--model", str(run), str(picture), "--output", str(tmp_path / "t.csv"),
                     "--workers", "0", "-q"]) == 0
    assert (tmp_path / "t.csv").read_text().count("\n") == 2          # a header and the row
    capsys.readouterr()
    assert main(["export", "--model", str(run), "--format", "wd", "-q"]) == 2
    assert "timm model with a linear head" in capsys.readouterr().err


@pytest.mark.heavy          # the ONNX export and its check against torch take about 12 s
def test_a_stack_of_backbones_exports_to_onnx(shards, tmp_path):
    pytest.importorskip("timm")
    pytest.importorskip("onnxscript")
    assert _train(shards, tmp_path / "stack", "--freeze-backbone", arch=STACK) == 0
    pytest.importorskip("onnxruntime")
    from train.export.onnx_writer import check_onnx
    from train.runs import load_run
    assert main(["export", "--model", str(tmp_path / "stack"), "--format", "onnx", "--out",
                 str(tmp_path / "stack.onnx"), "-q"]) == 0
    run = load_run(tmp_path / "stack", device="cpu", precision="fp32")
    assert check_onnx(run, tmp_path / "stack.onnx") < 1e-4       # onnxruntime against torch
