"""Every backbone the factory offers: its head sees torchvision's own features, and the
optimiser's groups hold each trainable parameter exactly once (frozen backbone or not).

The models are built on PyTorch's meta device (every parameter, no memory, no init time: the
55 backbones hold 3.3 billion parameters); the feature test then gives our model random
weights and hands the very same tensors to torchvision's model, so one forward of each on one
32 px image compares the two without initialising anything twice.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
import torchvision.models.regnet as regnet

from train.models import available, build_model
from train.optim import make_optimizer

# Over 100 M parameters: the feature test of these is left to the full suite.
LARGE = {"convnext_large", "efficientnet_v2_l", "regnet_x_32gf", "regnet_y_32gf",
         "regnet_y_128gf", "wide_resnet101_2"}
BACKBONES = [pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n for n in available()]


@pytest.fixture
def on_meta(monkeypatch):
    """Build on the meta device. RegNet computes its block widths with tensors it reads back
    (`.tolist()`), which a meta tensor cannot do: that one computation runs on the CPU."""
    plan = regnet.BlockParams.from_init_params.__func__

    def on_cpu(cls, *args, **kwargs):
        with torch.device("cpu"):
            return plan(cls, *args, **kwargs)

    monkeypatch.setattr(regnet.BlockParams, "from_init_params", classmethod(on_cpu))

    def build(make):
        with torch.device("meta"):
            return make()
    return build


def _up_to_classifier(name: str, backbone: torch.nn.Module) -> torch.nn.Module:
    """torchvision's forward with its final classifier layer replaced by the identity."""
    if hasattr(backbone, "fc"):
        backbone.fc = torch.nn.Identity()
    elif name.startswith("convnext"):
        backbone.classifier[-1] = torch.nn.Identity()       # keeps LayerNorm2d and Flatten
    elif name.startswith(("vgg", "densenet", "efficientnet", "mobilenet")):
        backbone.classifier = torch.nn.Identity()
    return backbone


def _random_weights(model: torch.nn.Module, seed: int = 0) -> None:
    """Move a meta model to the CPU with seeded weights that keep activations in range."""
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                t.zero_()                                   # num_batches_tracked
            elif name.endswith("running_var"):
                t.uniform_(0.5, 1.5, generator=gen)
            elif t.ndim > 1:                                # conv and linear weights
                t.normal_(0, t[0].numel() ** -0.5, generator=gen)
            elif name.endswith("weight") or "layer_scale" in name:
                t.uniform_(0.5, 1.5, generator=gen)
            else:                                           # biases, running means
                t.normal_(0, 0.1, generator=gen)


def test_every_family_on_offer_has_a_reference_rule():
    families = {n.split("_")[0].rstrip("0123456789") for n in available()}
    assert families == {"convnext", "densenet", "efficientnet", "mobilenet", "regnet", "resnet",
                        "resnext", "vgg", "wide"}
    assert len(available()) == 55


@pytest.mark.parametrize("name", BACKBONES)
def test_pooled_features_equal_torchvisions_forward(name, on_meta):
    ours = on_meta(lambda: build_model(name, 3, weights="none"))
    reference = _up_to_classifier(name, on_meta(lambda: torchvision.models.get_model(name)))
    _random_weights(ours)
    # The same tensors, in module order: our model is torchvision's trunk, pooling and (for
    # ConvNeXt) its LayerNorm, with the head after them.
    mine = [(k, v) for k, v in ours.state_dict().items() if not k.startswith("head.")]
    theirs = list(reference.state_dict())
    assert len(mine) == len(theirs)
    state = dict(zip(theirs, (v for _, v in mine), strict=True))
    reference.load_state_dict(state, strict=True, assign=True)
    assert not any(t.is_meta for t in [*reference.parameters(), *reference.buffers()])
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference.eval()(x)
        got = ours.eval().embed(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", available())
def test_the_optimiser_groups_hold_every_trainable_parameter_once(name, on_meta):
    model = on_meta(lambda: build_model(name, 3, weights="none"))
    head = {id(p) for p in model.head.parameters()}

    def grouped() -> tuple[list[int], set[int]]:
        groups = make_optimizer(model, "adamw", 1e-3, 0.05, 0.9).param_groups
        ids = [id(p) for g in groups for p in g["params"]]
        assert all((id(p) in head) == (g["part"] == "head") for g in groups for p in g["params"])
        return ids, {id(p) for p in model.parameters() if p.requires_grad}

    ids, trainable = grouped()
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    assert trainable == {id(p) for p in model.parameters()}
    model.freeze_backbone()                          # --freeze-backbone: a linear probe
    ids, trainable = grouped()
    assert len(ids) == len(set(ids)) and set(ids) == trainable == head


def test_a_frozen_backbone_stays_in_eval_mode():
    model = build_model("convnext_tiny", 3, weights="none")
    model.freeze_backbone()
    model.train()
    assert model.head.training
    assert not any(m.training for name, m in model.named_modules()
                   if name and not name.startswith("head"))
    assert not any(p.requires_grad for name, p in model.named_parameters()
                   if not name.startswith("head."))
