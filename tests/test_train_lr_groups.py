"""Discriminative learning rates: the backbone's groups peak at --lr-backbone, and the warm-up,
the cosine and the head-only warm-up apply to each group (hand-computed values)."""

from __future__ import annotations

import pytest
import torch

from train.models import build_model
from train.optim import make_optimizer, make_schedule

torch.set_num_threads(1)


def _lrs_at(steps: list[int], head_warmup: int = 0) -> dict[int, dict[str, float]]:
    model = build_model("resnet18", 3, weights="none")
    opt = make_optimizer(model, "adamw", 1e-3, 0.05, 0.9, lr_backbone=1e-4)
    sched = make_schedule(opt, total=20, warmup=4, head_warmup=head_warmup)
    seen = {}
    for step in range(max(steps) + 1):
        if step in steps:
            by_part = {}
            for g in opt.param_groups:
                by_part.setdefault(g["part"], set()).add(g["lr"])
            assert all(len(v) == 1 for v in by_part.values())    # decay and no-decay alike
            seen[step] = {k: v.pop() for k, v in by_part.items()}
        opt.step()
        sched.step()
    return seen


def test_each_group_warms_up_and_decays_from_its_own_peak():
    lrs = _lrs_at([0, 2, 4, 12, 19])
    # warm-up (step + 1) / 4, then 0.5 (1 + cos(pi (step - 4) / 16))
    expected = {0: 0.25, 2: 0.75, 4: 1.0, 12: 0.5, 19: 0.5 * (1 - 0.9807852804032304)}
    for step, factor in expected.items():
        assert lrs[step]["head"] == pytest.approx(1e-3 * factor)
        assert lrs[step]["features"] == pytest.approx(1e-4 * factor)


def test_a_head_only_warmup_holds_the_backbone_at_zero_then_joins_the_schedule():
    lrs = _lrs_at([0, 2, 3, 5], head_warmup=3)
    assert [lrs[s]["features"] for s in (0, 2)] == [0.0, 0.0]
    assert lrs[2]["head"] == pytest.approx(0.75e-3)
    assert lrs[3]["features"] == pytest.approx(1e-4)          # warm-up factor 4/4
    assert lrs[5]["features"] == pytest.approx(1e-4 * 0.5 * (1 + 0.9807852804032304))


def test_without_lr_backbone_every_group_peaks_at_lr():
    model = build_model("resnet18", 3, weights="none")
    opt = make_optimizer(model, "sgd", 1e-2, 0.0, 0.9)
    assert {g["lr"] for g in opt.param_groups} == {1e-2}


@pytest.mark.parametrize("arch", ["timm:test_vit", "timm:test_convnext"])
def test_layer_decay_scales_each_parameter_as_timm_does(arch):
    """Each backbone parameter's learning rate is its peak times the lr_scale that timm's own
    param_groups_layer_decay gives it, its weight decay as timm's; the head keeps its own."""
    from timm.optim import param_groups_layer_decay
    model = build_model(arch, 3, weights="none", image_size=32)
    opt = make_optimizer(model, "adamw", 1e-3, 0.05, 0.9, lr_backbone=2e-4, layer_decay=0.7)
    ours = {id(p): g for g in opt.param_groups for p in g["params"]}
    reference = param_groups_layer_decay(model.features.model, weight_decay=0.05,
                                         layer_decay=0.7)
    theirs = {id(p): g for g in reference for p in g["params"]}
    backbone = [p for n, p in model.named_parameters() if not n.startswith("head.")]
    assert set(theirs) == {id(p) for p in backbone}
    for p in backbone:
        assert ours[id(p)]["lr"] == pytest.approx(2e-4 * theirs[id(p)]["lr_scale"])
        assert ours[id(p)]["weight_decay"] == theirs[id(p)]["weight_decay"]
    assert len({g["lr_scale"] for g in reference}) > 2              # the layers do differ
    assert {g["lr"] for g in opt.param_groups if g["part"] == "head"} == {1e-3}


def test_layer_decay_groups_follow_the_warmup_and_cosine_from_their_own_peaks():
    model = build_model("timm:test_vit", 3, weights="none", image_size=32)
    opt = make_optimizer(model, "adamw", 1e-3, 0.05, 0.9, layer_decay=0.5)
    peaks = [g["lr"] for g in opt.param_groups]
    assert min(peaks) < max(peaks)
    sched = make_schedule(opt, total=20, warmup=4)
    for step in range(13):
        if step in (0, 2, 12):
            factor = {0: 0.25, 2: 0.75, 12: 0.5}[step]
            assert [g["lr"] for g in opt.param_groups] == pytest.approx(
                [factor * peak for peak in peaks])
        opt.step()
        sched.step()


def test_layer_decay_on_a_backbone_without_timm_layers_is_refused():
    from train.errors import TrainError
    model = build_model("resnet18", 3, weights="none")
    with pytest.raises(TrainError, match="timm backbone"):
        make_optimizer(model, "adamw", 1e-3, 0.05, 0.9, layer_decay=0.75)
    with pytest.raises(TrainError, match=r"\(0, 1\]"):
        make_optimizer(build_model("timm:test_vit", 3, weights="none", image_size=32),
                       "adamw", 1e-3, 0.05, 0.9, layer_decay=1.5)
