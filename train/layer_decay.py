"""Layer-wise learning-rate decay (`--layer-decay D`), as BEiT and timm fine-tune ViTs.

A backbone parameter in layer `i` of `L` (0: the patch embedding and position tokens, then one
layer per block, `L`: the final norm) trains at `D ** (L - i)` of the backbone's peak learning
rate; the head trains at its own. The layers are timm's own grouping of the model
(`group_matcher(coarse=False)`, the map `timm.optim.param_groups_layer_decay` uses), so it
applies to the `timm:` backbones that have one (ViT, Swin, EVA02, ConvNeXt, EfficientNet...).
"""

from __future__ import annotations

from torch import nn

from .backbones.timm_zoo import TimmFeatures, import_timm
from .errors import TrainError


def layer_scales(model: nn.Module, decay: float) -> dict[str, float]:
    """The learning-rate factor of each parameter of `model`'s timm backbone, by its name in
    `model`; raises TrainError for a backbone without timm's layer groups or a bad `decay`."""
    if not 0 < decay <= 1:
        raise TrainError(f"--layer-decay must be in (0, 1], not {decay}")
    features = getattr(model, "features", None)
    inner = features.model if isinstance(features, TimmFeatures) else None
    if inner is None or not hasattr(inner, "group_matcher"):
        raise TrainError("--layer-decay needs a timm backbone with layer groups "
                         "(--arch timm:NAME, e.g. timm:vit_base_patch16_224)")
    import_timm()
    from timm.models import group_parameters
    layers = group_parameters(inner, inner.group_matcher(coarse=False), reverse=True)
    last = max(layers.values())
    return {f"features.model.{name}": decay ** (last - layers.get(name, last))
            for name, _ in inner.named_parameters()}
