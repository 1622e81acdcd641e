"""The model factory: backbones by name with a multi-label head.

    build_model("resnet50", num_outputs=5000, weights="imagenet", head="linear")
    build_model("timm:convnext_tiny", 5000, weights="convnext-folder/", image_size=448)

Two families (train/backbones/): torchvision's classification zoo, and timm's models as
`timm:NAME` (the `[timm]` extra); `A+B` stacks backbones of either (backbones/stacked.py).
`weights` is "imagenet" (torchvision's weights API or timm's hub, downloaded once, failing
offline with a message saying which file to put where), "none", a .pth / .safetensors state
dict or a timm folder (config.json + model.safetensors), loaded strictly (train/weights.py).
The classifier is replaced by global average pooling, dropout
and a linear layer ("linear"), or by the alt-i2v-style BatchNorm + dropout MLP ("mlp").
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .backbones import Backbone, stacked, timm_zoo, torchvision_zoo
from .errors import TrainError

log = logging.getLogger(__name__)


class Tagger(nn.Module):
    """backbone features -> pooling (-> ConvNeXt's LayerNorm) -> head. `embed()` gives the
    pooled features, equal to torchvision's (or timm's) forward up to its classifier. With
    `pool_size` 0 the features pool themselves (ViT, Swin, MaxViT, timm).

    With `frozen` (a linear probe) the backbone stays in eval mode whatever `train()` says:
    its BatchNorm statistics never move."""

    def __init__(self, features: nn.Module, width: int, num_outputs: int, *, head: str = "linear",
                 dropout: float = 0.2, pool_size: int = 1, norm: nn.Module | None = None):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(pool_size) if pool_size else nn.Identity()
        if norm is not None:
            self.norm = norm
        self.frozen = False
        if head == "linear":
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_outputs))
        elif head == "mlp":
            hidden = min(4096, max(512, width))
            self.head = nn.Sequential(
                nn.BatchNorm1d(width), nn.Dropout(dropout), nn.Linear(width, hidden),
                nn.ReLU(inplace=True), nn.BatchNorm1d(hidden), nn.Dropout(dropout),
                nn.Linear(hidden, num_outputs))
        else:
            raise TrainError(f"unknown head {head!r} (linear or mlp)")

    def backbone_modules(self) -> list[nn.Module]:
        """Everything before the head: the trunk and ConvNeXt's LayerNorm after pooling."""
        return [m for name, m in self.named_children() if name != "head"]

    def freeze_backbone(self) -> None:
        """Train the head only: no gradients and eval mode for everything before it."""
        self.frozen = True
        for module in self.backbone_modules():
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True) -> Tagger:
        super().train(mode)
        if self.frozen:
            for module in self.backbone_modules():
                module.eval()
        return self

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        if hasattr(self, "norm"):
            x = self.norm(x)
        return torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def available() -> list[str]:
    """Backbone names of torchvision's family (timm's are `timm:NAME`, see `train --list-archs`)."""
    return torchvision_zoo.available()


def family(name: str):
    """The module that builds backbone `name`: timm_zoo for `timm:NAME`, else torchvision_zoo."""
    return timm_zoo if name.startswith(timm_zoo.PREFIX) else torchvision_zoo


def build_backbone(name: str, weights: str = "imagenet", image_size: int = 224,
                   partial: bool = False, model_args: dict | None = None) -> Backbone:
    """The backbone `name` (torchvision's, or timm's as `timm:NAME`, with timm's `model_args`)
    with its weights and their normalisation; raises TrainError (WeightsError for weights
    that do not fit)."""
    if stacked.is_stacked(name):
        if weights not in ("imagenet", "none") or model_args:
            raise TrainError(f"--arch {name!r} stacks backbones: --weights imagenet or none "
                             "(a weights file or model_args fill one backbone)")
        return stacked.stack(name, [build_backbone(part, weights, image_size, partial)
                                    for part in stacked.parts_of(name)])
    if name.startswith(timm_zoo.PREFIX):
        return timm_zoo.build(name[len(timm_zoo.PREFIX):], weights, image_size, partial,
                              model_args)
    if model_args:
        raise TrainError(f"model_args {model_args} are for timm's models, not {name}")
    return torchvision_zoo.build(name, weights, image_size, partial)


def build_model(name: str, num_outputs: int, weights: str = "imagenet", head: str = "linear",
                dropout: float = 0.2, image_size: int = 224, partial: bool = False,
                model_args: dict | None = None) -> Tagger:
    """A Tagger on a backbone; `model.normalization` is what its inputs must be normalised
    with. Raises TrainError (WeightsError for weights)."""
    b = build_backbone(name, weights, image_size, partial, model_args)
    model = Tagger(b.features, b.width, num_outputs, head=head, dropout=dropout,
                   pool_size=b.pool_size, norm=b.norm)
    model.normalization = b.normalization
    return model


def prior_bias(model: Tagger, priors: torch.Tensor) -> None:
    """Start the head's output bias at each tag's log-odds (Lin et al. 2017, 3.3), so that the
    untrained model already predicts each tag's base rate. With a zero bias every tag starts
    at 0.5 and, for a thousand rare tags, the first hundreds of steps only push all outputs
    down instead of learning what tells the tags apart."""
    last = next(m for m in reversed(list(model.head.modules())) if isinstance(m, nn.Linear))
    if last.out_features != len(priors):
        raise TrainError(f"{len(priors)} tag priors for a head of {last.out_features} outputs")
    p = priors.double().clamp(1e-4, 1 - 1e-4)
    with torch.no_grad():
        last.bias.copy_(torch.log(p / (1 - p)).to(last.bias.dtype))


def transfer(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    """Load the tensors of `state` that fit `model` (same name and shape): staged transfer.

    Returns (loaded, skipped) names; a head for another label space is skipped."""
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fits, strict=False)
    return sorted(fits), sorted(k for k in state if k not in fits)
