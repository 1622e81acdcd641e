"""Several frozen backbones as one (`--arch A+B`), as the transfer-learning seed stacks the
pooled features of several ImageNet models into one classifier.

    build_backbone("resnet50+timm:tf_efficientnet_lite0", "imagenet", 224)

The inputs arrive normalised for the first backbone (the run records its normalisation, and
`tag` applies it); each other backbone sees them renormalised to its own mean and std (a
per-channel scale and shift, kept in the state dict with the weights). Their pooled features
are concatenated for the head. All parts must take the same channel order; the resize
interpolation is the first's.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import TrainError
from ..normalization import Normalization
from . import Backbone

SEPARATOR = "+"


def is_stacked(name: str) -> bool:
    return SEPARATOR in name


def parts_of(name: str) -> list[str]:
    """The backbone names of `A+B+...`; raises TrainError for an empty part or one alone."""
    names = name.split(SEPARATOR)
    if len(names) < 2 or not all(names):
        raise TrainError(f"--arch {name!r}: stack two or more backbones as A+B")
    return names


class _Pooled(nn.Module):
    """One part: its trunk, pooling and post-pooling norm, flattened to (batch, width)."""

    def __init__(self, b: Backbone):
        super().__init__()
        self.features = b.features
        self.pool = nn.AdaptiveAvgPool2d(b.pool_size) if b.pool_size else nn.Identity()
        self.norm = b.norm if b.norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.norm(self.pool(self.features(x))), 1)


class StackedFeatures(nn.Module):
    """The concatenated pooled features of `parts`, for inputs normalised with `input_norm`."""

    def __init__(self, parts: list[Backbone], input_norm: Normalization):
        super().__init__()
        self.parts = nn.ModuleList(_Pooled(b) for b in parts)
        mean, std = torch.tensor(input_norm.mean), torch.tensor(input_norm.std)
        for i, b in enumerate(parts):
            own_mean = torch.tensor(b.normalization.mean)
            own_std = torch.tensor(b.normalization.std)
            # x_own = (x * std + mean - own_mean) / own_std
            self.register_buffer(f"scale{i}", (std / own_std).view(1, 3, 1, 1))
            self.register_buffer(f"shift{i}", ((mean - own_mean) / own_std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(x * getattr(self, f"scale{i}") + getattr(self, f"shift{i}"))
                          for i, part in enumerate(self.parts)], dim=1)


def stack(name: str, parts: list[Backbone]) -> Backbone:
    """One Backbone of `parts`, normalised as the first."""
    orders = {b.normalization.channel_order for b in parts}
    if len(orders) > 1:
        raise TrainError(f"--arch {name!r}: the backbones take different channel orders "
                         f"({', '.join(sorted(orders))}); stack ones that take the same")
    first = parts[0].normalization
    return Backbone(features=StackedFeatures(parts, first), width=sum(b.width for b in parts),
                    pool_size=0, norm=None, normalization=first)
