"""The normalisation that goes with the weights: applied in training, recorded in
run/config.json, and what `tag` feeds the model (the same bytes as training's evaluation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from support.train_fixtures import emulator_shards
from torchvision.transforms import v2

from train.data import decode_image
from train.run import Run
from train.runs import load_run
from train.settings import TrainSettings
from train.tag.inference import load_picture, model_input, predict

torch.set_num_threads(1)
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)       # not ImageNet's: a wrong one shows


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory):
    """A run started from a timm folder (config.json + model.safetensors, written by timm's
    own save_for_hf) whose pretrained_cfg has its own mean, std and bicubic resizing."""
    timm = pytest.importorskip("timm")
    from timm.models import save_for_hf
    root = tmp_path_factory.mktemp("normalisation")
    source = timm.create_model("test_convnext")
    source.pretrained_cfg = {**source.pretrained_cfg, "mean": MEAN, "std": STD,
                             "interpolation": "bicubic"}
    save_for_hf(source, str(root / "weights"))
    shards = emulator_shards(root / "shards", posts=90, size=32)
    run = Run(TrainSettings(shards=str(shards), out=str(root / "run"), model="timm:test_convnext",
                            weights=str(root / "weights"), image_size=32, epochs=1, max_steps=1,
                            batch_size=8, workers=0, log_every=0, checkpoint_every=0,
                            shuffle_buffer=50))
    run.fit()
    return run, root


def _val_image(root) -> bytes:
    from shards import read_shards
    return next(iter(read_shards(root / "shards", "val", image="bytes")))["image"]


def test_the_weights_normalisation_is_recorded_in_config_json(pretrained_run):
    _, root = pretrained_run
    record = json.loads((root / "run" / "config.json").read_text())["normalization"]
    assert record["mean"] == pytest.approx(MEAN) and record["std"] == pytest.approx(STD)
    assert record["interpolation"] == "bicubic"


def test_training_evaluates_with_the_weights_normalisation(pretrained_run):
    run, root = pretrained_run
    image = decode_image(_val_image(root))
    reference = v2.Compose([v2.Resize((32, 32), interpolation=v2.InterpolationMode.BICUBIC,
                                      antialias=True),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    assert torch.equal(run.val_ds.transform(image), reference(image))


def test_tag_feeds_the_model_the_bytes_of_trainings_evaluation_transform(pretrained_run,
                                                                          tmp_path):
    run, root = pretrained_run
    image = decode_image(_val_image(root))
    trained = run.val_ds.transform(image)
    loaded = load_run(root / "run", device="cpu")
    picture = Image.fromarray(image.permute(1, 2, 0).numpy())
    picture.save(tmp_path / "picture.png")
    prepared = load_picture((tmp_path / "picture.png").read_bytes(), loaded.image_size,
                            settings=loaded.preparation,
                            interpolation=loaded.normalization.mode)
    tagged = model_input(loaded, prepared[None])[0]
    assert tagged.numpy().tobytes() == trained.numpy().tobytes()
    # and tag's predictions are the model's on that tensor
    batch = next(iter(predict(loaded, [tmp_path / "picture.png"], workers=0)))
    with torch.no_grad():
        expected = torch.sigmoid(loaded.model(trained[None])).numpy()
    np.testing.assert_allclose(batch.scores, expected, rtol=1e-5, atol=1e-6)


def test_tag_resizes_a_recorded_preparation_with_the_weights_interpolation(tmp_path):
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 255, (32, 32, 3), np.uint8)
    Image.fromarray(picture).save(tmp_path / "p.png")
    from prep.imaging import ImageSettings
    x = load_picture((tmp_path / "p.png").read_bytes(), 24,
                     settings=ImageSettings(size=32, resize_mode="pad"),
                     interpolation=v2.InterpolationMode.BICUBIC)
    expected = v2.Resize((24, 24), interpolation=v2.InterpolationMode.BICUBIC,
                         antialias=True)(torch.from_numpy(picture).permute(2, 0, 1))
    assert torch.equal(x, expected)


def test_the_wd_export_graph_normalises_as_the_run_was_trained(pretrained_run):
    run, root = pretrained_run
    from train.export.wd_writer import WdGraph
    image = decode_image(_val_image(root))
    loaded = load_run(root / "run", device="cpu")
    graph = WdGraph(loaded, list(range(len(loaded.names)))).eval()
    bgr = image.permute(1, 2, 0)[..., [2, 1, 0]].float()[None]     # NHWC BGR 0-255
    with torch.no_grad():
        got = graph(bgr)
        expected = torch.sigmoid(loaded.model(run.val_ds.transform(image)[None]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
