"""Every backbone family the factory offers feeds its head torchvision's own features."""

from __future__ import annotations

import pytest
import torch
import torchvision

from train.models import available, build_model

# The smallest member of each family that `available()` offers.
FAMILIES = ["resnet18", "resnext50_32x4d", "wide_resnet50_2", "regnet_y_400mf", "vgg11",
            "convnext_tiny", "efficientnet_b0", "mobilenet_v2",
            "mobilenet_v3_small", "densenet121"]


def _up_to_classifier(name: str, backbone: torch.nn.Module) -> torch.nn.Module:
    """torchvision's forward with its final classifier layer replaced by the identity."""
    if hasattr(backbone, "fc"):
        backbone.fc = torch.nn.Identity()
    elif name.startswith("convnext"):
        backbone.classifier[-1] = torch.nn.Identity()       # keeps LayerNorm2d and Flatten
    elif name.startswith(("vgg", "densenet", "efficientnet", "mobilenet")):
        backbone.classifier = torch.nn.Identity()
    return backbone


def test_every_family_on_offer_is_tested():
    assert {n.split("_")[0].rstrip("0123456789") for n in available()} <= {
        n.split("_")[0].rstrip("0123456789") for n in FAMILIES}


@pytest.mark.parametrize("name", FAMILIES)
def test_pooled_features_equal_torchvisions_forward(name):
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, weights=None).eval()
    torch.manual_seed(0)                 # build_model draws the same backbone first
    ours = build_model(name, 3, weights="none").eval()
    x = torch.randn(2, 3, 32, 32)
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
