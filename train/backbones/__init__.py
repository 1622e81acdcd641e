"""Backbone families behind `train.models.build_model`: torchvision's classification zoo
(`torchvision_zoo`) and timm's models as `timm:NAME` (`timm_zoo`, the `[timm]` extra).

Each family builds a `Backbone`: the trunk whose pooled output the head sees, the width of that
output, and the normalisation that goes with its weights."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..normalization import Normalization


@dataclass
class Backbone:
    features: nn.Module              # images -> feature maps (pool_size > 0) or pooled vectors
    width: int                       # features fed to the head
    pool_size: int                   # 0: `features` pools itself
    norm: nn.Module | None           # after pooling (torchvision's ConvNeXt LayerNorm)
    normalization: Normalization     # the inputs its weights expect
