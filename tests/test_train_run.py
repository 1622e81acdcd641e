"""Training runs on CPU with tiny images and resnet18: learning, resume, transfer, tasks."""

from __future__ import annotations

import csv
import io
import json
import logging
import math

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from support.train_fixtures import corrupt_images, emulator_shards

from shards.manifest import read_manifest, write_manifest
from train.cli import main
from train.run import Run
from train.settings import TrainSettings

BASE = dict(model="resnet18", weights="none", image_size=64, batch_size=32, workers=0,
            lr=2e-3, log_every=0, shuffle_buffer=200, checkpoint_every=0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return emulator_shards(tmp_path_factory.mktemp("shards"), posts=420)


def _settings(shards, out, **kw) -> TrainSettings:
    return TrainSettings(shards=str(shards), out=str(out), **{**BASE, **kw})


# The two longest trainings of the suite (a few hundred steps each): the heavy tier.
@pytest.mark.heavy
def test_loss_falls_and_map_beats_the_prevalence_baseline(shards, tmp_path):
    report = Run(_settings(shards, tmp_path / "run", epochs=5)).fit()
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    losses = [float(r["train_loss"]) for r in rows]
    assert losses[-1] < 0.8 * losses[0]
    # A model that knows nothing scores each tag by its prevalence: its AP is the prevalence.
    targets = []
    for line in (shards / "tags.csv").read_text().splitlines()[1:]:
        targets.append(int(line.split(",")[3]))
    train_samples = read_manifest(shards)["splits"]["train"]
    baseline = float(np.mean(np.array(targets) / train_samples["successes"]))
    assert report["mAP"] > baseline + 0.2, (report["mAP"], baseline)
    for name in ("config.json", "tags.csv", "eval.json", "metrics.png", "model.safetensors",
                 "checkpoints/last.pt"):
        assert (tmp_path / "run" / name).exists(), name
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == report["step"] == json.loads(
        (tmp_path / "run" / "config.json").read_text())["total_steps"]
    assert {"top100", "category_0"} <= set(report["slices"])


def _with_a_corrupt_sample(shards, into):
    """A copy of `shards` whose first train shard has one undecodable image."""
    import shutil
    shutil.copytree(shards, into)
    corrupt_images(into / "train" / "00000.tar", (4, 5))
    return into


@pytest.mark.heavy
def test_resume_continues_exactly_where_the_run_stopped(shards, tmp_path):
    # a dropped sample must not shift what the resumed run reads
    shards = _with_a_corrupt_sample(shards, tmp_path / "shards")
    kw = dict(epochs=2, workers=2, checkpoint_every=2, image_size=32)
    Run(_settings(shards, tmp_path / "whole", **kw)).fit()
    Run(_settings(shards, tmp_path / "cut", max_steps=5, **kw)).fit()     # stops mid-epoch
    cut = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert cut["step"] == 5 and cut["batches_in_epoch"] > 0
    Run(_settings(shards, tmp_path / "cut", resume=True, **kw)).fit()
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_init_from_and_freeze_backbone_keep_the_features(shards, tmp_path):
    # a few steps each: the features must come through a trained first run and stay put
    Run(_settings(shards, tmp_path / "first", epochs=1, max_steps=3)).fit()
    Run(_settings(shards, tmp_path / "probe", epochs=1, max_steps=3, task="binary",
                  positive="circle", init_from=str(tmp_path / "first"),
                  freeze_backbone=True)).fit()
    first = load_file(str(tmp_path / "first" / "model.safetensors"))
    probe = load_file(str(tmp_path / "probe" / "model.safetensors"))
    # frozen means frozen: weights and BatchNorm running statistics alike
    features = [k for k in first if k.startswith("features.")]
    assert any("running_mean" in k for k in features)
    assert features and all(torch.equal(first[k], probe[k]) for k in features)
    assert probe["head.1.weight"].shape[0] == 1 and first["head.1.weight"].shape[0] > 1


def test_a_corrupt_shard_is_skipped_with_a_warning_and_counted(shards, tmp_path, caplog):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(shards, broken)
    (broken / "train" / "00099.tar").write_bytes(b"this is not a tar file" * 100)
    manifest = read_manifest(broken)
    manifest["splits"]["train"]["shards"].insert(0, {"name": "00099", "count": 40,
                                                     "successes": 40})
    manifest["splits"]["train"]["successes"] += 40
    write_manifest(broken, manifest)
    with caplog.at_level(logging.WARNING):
        report = Run(_settings(broken, tmp_path / "run", epochs=1)).fit()
    assert report["skipped_samples"] >= 1
    assert any("00099.tar" in r.getMessage() for r in caplog.records)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["--stream", "--out", str(tmp_path)]) == 2
    assert "--shards is required" in capsys.readouterr().err
    assert main(["--shards", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_imagenet_weights_offline_fail_with_a_clear_message(shards, tmp_path, capsys):
    from pathlib import Path
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    if any(cache.glob("resnet18-*.pth")):
        pytest.skip("ImageNet weights are cached on this machine")
    code = main(["--stream", "--shards", str(shards), "--out", str(tmp_path / "r"),
                 "--arch", "resnet18", "--weights", "imagenet", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot load ImageNet weights" in err and "--weights none" in err


def test_exported_model_loads_with_plain_torchvision_as_the_readme_shows(shards, tmp_path):
    import torchvision
    Run(_settings(shards, tmp_path / "run", epochs=1, max_steps=1)).fit()
    state = load_file(str(tmp_path / "run" / "model.safetensors"))
    tags = [r["name"] for r in csv.DictReader((tmp_path / "run" / "tags.csv").open())]
    backbone = torchvision.models.resnet18(weights=None)
    model = torch.nn.Sequential()
    model.features = torch.nn.Sequential(*list(backbone.children())[:-2])
    model.pool, model.flatten = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    model.head = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(512, len(tags)))
    model.load_state_dict(state, strict=True)
    from train.models import build_model
    ours = build_model("resnet18", len(tags), weights="none")
    ours.load_state_dict(state)
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(model.eval()(x), ours.eval()(x), atol=1e-5)


def test_device_decoding_trains_on_encoded_batches(shards, tmp_path):
    # On CPU the "device" is the CPU: the path that hands JPEG bytes to decode_jpeg is the same.
    report = Run(_settings(shards, tmp_path / "run", epochs=1, device_decode=True,
                           workers=2, max_steps=3)).fit()
    assert report["step"] == 3 and report["skipped_samples"] == 0


def _known_rate_shards(root):
    """60 training samples: `half` on 30, `tenth` on 6, `never` on none, `always` on all; a
    failed sample (no image in the tar) carries `never` in its parquet row. The validation
    split and tags.csv (counts over two million posts, as a metadata dump gives) say other
    things: neither may move the prior."""
    from shards import ShardWriter
    from shards.manifest import complete
    from shards.tags import write_tags
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (90, 120, 150)).save(out, "JPEG")
    names = ["half", "tenth", "never", "always"]

    def meta(tags):
        ids = [names.index(t) for t in tags]
        return {"tags": tags, "labels": tags, "label_ids": ids}

    root.mkdir(parents=True)
    write_tags(root / "tags.csv", [(-1, n, 0, 2_000_000) for n in names])
    with ShardWriter(root / "train", "00000") as w:
        for i in range(60):
            tags = [t for t, on in (("half", i % 2), ("tenth", i % 10 == 3)) if on] + ["always"]
            w.write({"__key__": f"t{i}", "jpg": out.getvalue(), "json": meta(tags)})
        w.write({"__key__": "broken", "json": meta(["never", "half"]), "status": "failed_corrupt",
                 "error_message": "cannot decode"})
    with ShardWriter(root / "val", "00000") as w:
        for i in range(20):
            w.write({"__key__": f"v{i}", "jpg": out.getvalue(), "json": meta(["never", "half"])})
    splits = {s: {"shards": [{"name": "00000"}]} for s in ("train", "val")}
    write_manifest(root, complete(root, {"format": "booru-tagger-shards", "format_version": 1,
                                         "complete": False, "task": "multilabel",
                                         "splits": splits}))
    return root


def test_the_head_starts_at_the_training_splits_base_rates(tmp_path):
    # lr 0: the exported head is the initial one. Its bias is each tag's log-odds in the 60
    # training samples written above, clipped to [1e-4, 1 - 1e-4], worked out by hand.
    shards = _known_rate_shards(tmp_path / "shards")
    Run(_settings(shards, tmp_path / "run", epochs=1, max_steps=1, lr=0.0, image_size=32,
                  batch_size=16, keep="last")).fit()
    clip = math.log(1e-4 / (1 - 1e-4))
    expected = [math.log(0.5 / 0.5), math.log(0.1 / 0.9), clip, -clip]
    bias = load_file(tmp_path / "run" / "model.safetensors")["head.1.bias"].double().numpy()
    np.testing.assert_allclose(bias, expected, rtol=1e-6, atol=1e-6)
    Run(_settings(shards, tmp_path / "plain", epochs=1, max_steps=1, lr=0.0, image_size=32,
                  batch_size=16, keep="last", head_bias="default")).fit()
    plain = load_file(tmp_path / "plain" / "model.safetensors")["head.1.bias"].numpy()
    assert np.abs(plain).max() < 0.1      # PyTorch's uniform init, 1/sqrt(512) wide


def test_shards_without_labels_start_at_the_default_bias_and_say_so(tmp_path, caplog):
    shards = _known_rate_shards(tmp_path / "shards")
    import pyarrow.parquet as pq
    table = pq.read_table(shards / "train" / "00000.parquet")
    blank = table.set_column(table.schema.get_field_index("label_ids"), "label_ids",
                             pa.nulls(len(table), table.schema.field("label_ids").type))
    pq.write_table(blank, shards / "train" / "00000.parquet")
    with caplog.at_level(logging.WARNING):
        Run(_settings(shards, tmp_path / "run", epochs=1, max_steps=1, lr=0.0, image_size=32,
                      batch_size=16, keep="last")).fit()
    assert any("without label_ids" in r.getMessage() and "default bias" in r.getMessage()
               for r in caplog.records)
    bias = load_file(tmp_path / "run" / "model.safetensors")["head.1.bias"].numpy()
    assert np.abs(bias).max() < 0.1


def test_a_model_that_diverges_stops_the_run_naming_the_step(shards, tmp_path, capsys):
    # lr 1e30: two AdamW steps blow the weights up until the validation scores are NaN.
    code = main(["--stream", "--shards", str(shards), "--out", str(tmp_path / "run"),
                 "--arch", "resnet18", "--weights", "none", "--image-size", "32",
                 "--batch-size", "32", "--workers", "0", "--epochs", "1", "--max-steps", "2",
                 "--lr", "1e30", "--warmup-steps", "1", "--log-every", "0", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2
    assert "diverged by step 2 (epoch 0)" in err and "validation scores are NaN" in err, err
    assert not (tmp_path / "run" / "eval.json").exists()
    # The diverged weights are not checkpointed (the checkpoint follows the step's
    # evaluation), so a --resume cannot continue from them.
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
