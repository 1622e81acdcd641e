"""torchvision's classification models as backbones: the CNN families (split before their
pooling, so the head sees what torchvision's classifier sees) and the transformer families
(`vit_*`, `swin_*`, `maxvit_t`) and the other small CNNs (`shufflenet_*`, `mnasnet*`,
`alexnet`), whose forward runs whole with the final classifier layer replaced by the identity.

GoogLeNet and Inception v3 (auxiliary outputs) and SqueezeNet (a convolutional classifier)
are not offered.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..errors import TrainError, WeightsError
from ..normalization import Normalization
from ..weights import backbone_tensors, load_verified, read_weights, used_names
from . import Backbone

log = logging.getLogger(__name__)
SPLIT = ("resnet", "vgg", "resnext", "wide_resnet", "convnext", "efficientnet", "regnet",
         "mobilenet", "densenet")
# family prefix -> the final classifier layer that becomes the identity
WHOLE = {"vit_": "heads.head", "swin_": "head", "maxvit_": "classifier.5",
         "shufflenet_": "fc", "mnasnet": "classifier.1", "alexnet": "classifier.6"}
SIZED = ("vit_", "maxvit_")          # built for one input size (image_size=/input_size=)


def available() -> list[str]:
    """Backbone names this family offers."""
    return sorted(n for n in torchvision.models.list_models(module=torchvision.models)
                  if n.startswith(SPLIT + tuple(WHOLE)))


def weights_url(name: str) -> str:
    """Where torchvision downloads the ImageNet weights of `name` from."""
    return torchvision.models.get_model_weights(name).DEFAULT.url


def weights_on_disk(name: str) -> bool:
    """Whether torchvision's ImageNet weights of `name` are in the torch hub cache already."""
    url = weights_url(name)
    return (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file()


def build(name: str, weights: str, image_size: int, partial: bool = False) -> Backbone:
    """The backbone `name` with `weights` (imagenet, none or a file); raises TrainError."""
    if name not in available():
        raise TrainError(f"unknown model {name!r}; choose from {', '.join(available())}, "
                         "or timm:NAME (train --list-archs)")
    kwargs = {}
    if name.startswith("vit_"):
        kwargs["image_size"] = image_size
    elif name.startswith("maxvit_"):
        kwargs["input_size"] = (image_size, image_size)
    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except (AssertionError, ValueError, RuntimeError) as exc:
        raise TrainError(f"{name} cannot be built at --image-size {image_size}: {exc}") from None
    full = backbone_tensors(model)
    normalization = Normalization()
    if weights == "imagenet":
        state, label = _imagenet_state(name), f"torchvision's ImageNet weights of {name}"
    elif weights in ("none", "", None):
        state = label = None
    else:
        state, _ = read_weights(Path(weights))
        label = f"--weights {weights}"
    if state is not None:
        normalization = _weights_normalization(name)
        if name.startswith("vit_"):
            state = _fit_positions(model, state)
    parts = _split(name, model, image_size)
    if state is not None:
        load_verified(full, used_names(full, parts.features, parts.norm), state, partial, label)
    return Backbone(parts.features, parts.width, parts.pool_size, parts.norm, normalization)


def _imagenet_state(name: str) -> dict:
    enum = torchvision.models.get_model_weights(name)
    try:
        return enum.DEFAULT.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # noqa: BLE001 - urllib, ssl, OSError all mean "not available"
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise WeightsError(
            f"cannot load ImageNet weights for {name} ({exc.__class__.__name__}: {exc}). "
            f"They are downloaded once into {cache}; offline, copy {enum.DEFAULT.url} there, "
            "or use --weights none or --weights FILE") from None


def _weights_normalization(name: str) -> Normalization:
    """Mean, std, interpolation and crop size of torchvision's weights' own transforms."""
    enum = torchvision.models.get_model_weights(name).DEFAULT
    t = enum.transforms()
    return Normalization(tuple(t.mean), tuple(t.std), t.interpolation.value,
                         int(t.crop_size[0]), f"torchvision {enum}")


def _fit_positions(model: nn.Module, state: dict) -> dict:
    """A ViT checkpoint's position embedding interpolated to the model's input size."""
    key = "encoder.pos_embedding"
    if key in state and state[key].shape != model.encoder.pos_embedding.shape:
        from torchvision.models.vision_transformer import interpolate_embeddings
        log.info("interpolating the ViT position embedding to %d px", model.image_size)
        state = interpolate_embeddings(model.image_size, model.patch_size, state)
    return state


def _split(name: str, backbone: nn.Module, image_size: int) -> Backbone:
    """(trunk ending before pooling, width fed to the head, pooling size, norm after pooling),
    so that the head sees what torchvision's own classifier sees (tests/test_train_models.py):
    DenseNet ends its trunk with a ReLU, ConvNeXt normalises after pooling, VGG pools to 7x7;
    the WHOLE families keep their forward with the last classifier layer as the identity."""
    whole = next((path for prefix, path in WHOLE.items() if name.startswith(prefix)), None)
    if whole is not None:
        parent_path, _, leaf = whole.rpartition(".")
        parent = backbone.get_submodule(parent_path) if parent_path else backbone
        width = getattr(parent, leaf).in_features
        setattr(parent, leaf, nn.Identity())
        return Backbone(backbone, width, 0, None, Normalization())
    if name.startswith(("resnet", "resnext", "wide_resnet", "regnet")):
        width = backbone.fc.in_features
        trunk = nn.Sequential(*[m for n, m in backbone.named_children()
                                if n not in {"avgpool", "fc"}])
        return Backbone(trunk, width, 1, None, Normalization())
    trunk = backbone.features
    if name.startswith("densenet"):
        trunk.add_module("final_relu", nn.ReLU())     # F.relu in DenseNet.forward; no weights
    norm = backbone.classifier[0] if name.startswith("convnext") else None
    pool_size = 7 if name.startswith("vgg") else 1
    trunk.eval()                # probing the width must not move BatchNorm statistics
    with torch.no_grad():
        width = trunk(torch.zeros(1, 3, 64, 64)).shape[1] * pool_size ** 2
    trunk.train()
    return Backbone(trunk, width, pool_size, norm, Normalization())
