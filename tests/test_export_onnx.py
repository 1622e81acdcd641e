"""`train export --format onnx`: a dynamic batch axis, and the same scores as torch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from support.train_fixtures import tiny_run

from train.cli import main
from train.export.onnx_writer import Exported
from train.runs import load_run

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory, tmp_path_factory.mktemp("export") / "copy")


def test_onnx_matches_torch_on_another_batch_size(run_dir, capsys):
    assert main(["export", "--model", str(run_dir), "--format", "onnx"]) == 0
    assert "checked against torch" in capsys.readouterr().out
    path = run_dir / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (images,) = session.get_inputs()
    assert images.name == "images" and isinstance(images.shape[0], str)    # dynamic batch
    assert images.shape[1:] == [3, 32, 32]
    run = load_run(run_dir, device="cpu")
    x = torch.randn(7, 3, 32, 32)                          # traced with a batch of 2
    scores, embedding = session.run(["scores", "embedding"], {"images": x.numpy()})
    with torch.no_grad():
        want = torch.sigmoid(run.model(x)).numpy()
        want_embedding = run.model.embed(x).numpy()
    assert scores.shape == (7, len(run.names)) and embedding.shape == (7, 512)
    assert np.abs(scores - want).max() < 1e-4
    assert np.abs(embedding - want_embedding).max() < 1e-3
    single = session.run(["scores"], {"images": x[:1].numpy()})[0]
    assert np.abs(single - want[:1]).max() < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["labels"]) == run.names and meta["image_size"] == "32"


def test_multiclass_export_gives_softmax_scores(run_dir, tmp_path):
    from train.export.onnx_writer import export_onnx
    run = load_run(run_dir, device="cpu")
    run.task = "multiclass"
    export_onnx(run, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"),
                                   providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32)
    scores = session.run(["scores"], {"images": x.numpy()})[0]
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        assert np.abs(scores - Exported(run)(x)[0].numpy()).max() < 1e-4


def test_export_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "none")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert main(["export", "--model", str(run_dir), "--opset", "12"]) == 2
    assert "opset 18 or newer" in capsys.readouterr().err
    assert main(["export", "--model", str(run_dir), "--out", str(tmp_path / "x" / "m.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_the_metadata_names_the_resize_mode_the_shards_recorded(run_dir, tmp_path):
    """A keep_ratio run says keep_ratio (prep's name), not tag's old "stretch"."""
    from train.export.onnx_writer import export_onnx
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["preparation"] = {**(config.get("preparation") or {}), "size": 32,
                             "resize_mode": "keep_ratio"}
    (copy / "config.json").write_text(json.dumps(config))
    export_onnx(load_run(copy, device="cpu"), tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert meta["resize"] == "keep_ratio"
