"""`--arch A+B`: the pooled features of several frozen backbones joined for one head, each
backbone fed the pictures as its own weights expect them."""

from __future__ import annotations

import pytest
import torch

from train.errors import TrainError
from train.models import build_model

pytest.importorskip("timm")
STACK = "resnet18+timm:tf_efficientnet_lite0"     # ImageNet mean/std, and 0.5/0.5


def test_stacked_features_are_each_backbones_own_features_joined():
    torch.manual_seed(0)
    stacked = build_model(STACK, 3, weights="none", image_size=32).eval()
    parts = [build_model(name, 3, weights="none", image_size=32).eval()
             for name in STACK.split("+")]
    assert parts[0].normalization.mean != parts[1].normalization.mean  # renormalised, really
    for single, part in zip(parts, stacked.features.parts, strict=True):
        single.features.load_state_dict(part.features.state_dict())
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        got = stacked.embed(stacked.normalization.apply(images))
        want = torch.cat([m.embed(m.normalization.apply(images)) for m in parts], dim=1)
    assert stacked.normalization == parts[0].normalization
    assert got.shape == (2, 512 + 1280)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, weights, message", [
    ("resnet18+", "none", "two or more"),
    ("resnet18+resnet18", "some.pth", "--weights imagenet or none"),
])
def test_a_stack_that_cannot_be_built_is_one_error(name, weights, message):
    with pytest.raises(TrainError, match=message):
        build_model(name, 3, weights=weights, image_size=32)
