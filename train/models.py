"""The model factory: torchvision backbones by name with a multi-label head.

    build_model("resnet50", num_outputs=5000, weights="imagenet", head="linear")

`weights` is "imagenet" (torchvision's weights API, which downloads once into the torch hub
cache and fails offline with a clear message), "none", or a path to a state dict (.pth or
.safetensors) of the backbone. The classifier is replaced by global average pooling, dropout
and a linear layer ("linear"), or by the alt-i2v-style BatchNorm + dropout MLP ("mlp").
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from .errors import TrainError, WeightsError

log = logging.getLogger(__name__)


class Tagger(nn.Module):
    """backbone features -> pooling (-> ConvNeXt's LayerNorm) -> head. `embed()` gives the
    pooled features, equal to torchvision's forward up to its classifier.

    With `frozen` (a linear probe) the backbone stays in eval mode whatever `train()` says:
    its BatchNorm statistics never move."""

    def __init__(self, features: nn.Module, width: int, num_outputs: int, head: str = "linear",
                 dropout: float = 0.2, pool_size: int = 1, norm: nn.Module | None = None):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
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
    """Backbone names this factory can build (resnets, vggs and the other CNNs torchvision has)."""
    return sorted(n for n in torchvision.models.list_models(module=torchvision.models)
                  if n.startswith(("resnet", "vgg", "resnext", "wide_resnet", "convnext",
                                   "efficientnet", "regnet", "mobilenet", "densenet")))


def build_model(name: str, num_outputs: int, weights: str = "imagenet", head: str = "linear",
                dropout: float = 0.2) -> Tagger:
    """A Tagger on a torchvision backbone; raises TrainError (WeightsError for weights)."""
    if name not in available():
        raise TrainError(f"unknown model {name!r}; choose from {', '.join(available())}")
    backbone = torchvision.models.get_model(name, weights=None)
    if weights == "imagenet":
        backbone.load_state_dict(_imagenet_state(name))
    elif weights not in ("none", "", None):
        _load_backbone_file(backbone, Path(weights))
    features, width, pool_size, norm = _split(name, backbone)
    return Tagger(features, width, num_outputs, head, dropout, pool_size, norm)


def _imagenet_state(name: str) -> dict:
    enum = torchvision.models.get_model_weights(name)
    try:
        return enum.DEFAULT.get_state_dict(progress=False, check_hash=False)
    except Exception as exc:  # noqa: BLE001 - urllib, ssl, OSError all mean "not available"
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise WeightsError(
            f"cannot load ImageNet weights for {name} ({exc.__class__.__name__}: {exc}). "
            f"They are downloaded once into {cache}; offline, copy {enum.DEFAULT.url} there, "
            "or use --weights none or --weights PATH") from None


def _load_backbone_file(backbone: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise WeightsError(f"--weights {path}: no such file (use imagenet, none or a path)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state) if isinstance(state, dict) else state
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if len(missing) == len(backbone.state_dict()):
        raise WeightsError(f"--weights {path}: no tensor matches the {type(backbone).__name__} "
                           "backbone")
    log.info("loaded %s (%d missing, %d unexpected keys)", path, len(missing), len(unexpected))


def _split(name: str, backbone: nn.Module) -> tuple[nn.Module, int, int, nn.Module | None]:
    """(trunk ending before pooling, width fed to the head, pooling size, norm after pooling),
    so that the head sees what torchvision's own classifier sees (tests/test_train_models.py):
    DenseNet ends its trunk with a ReLU, ConvNeXt normalises after pooling, VGG pools to 7x7."""
    if name.startswith(("resnet", "resnext", "wide_resnet", "regnet")):
        width = backbone.fc.in_features
        trunk = nn.Sequential(*[m for n, m in backbone.named_children()
                                if n not in {"avgpool", "fc"}])
        return trunk, width, 1, None
    if not name.startswith(("vgg", "convnext", "efficientnet", "mobilenet", "densenet")):
        raise TrainError(f"no head rule for {name}")
    trunk = backbone.features
    if name.startswith("densenet"):
        trunk.add_module("final_relu", nn.ReLU())     # F.relu in DenseNet.forward; no weights
    norm = backbone.classifier[0] if name.startswith("convnext") else None
    pool_size = 7 if name.startswith("vgg") else 1
    trunk.eval()                # probing the width must not move BatchNorm statistics
    with torch.no_grad():
        width = trunk(torch.zeros(1, 3, 64, 64)).shape[1] * pool_size ** 2
    trunk.train()
    return trunk, width, pool_size, norm


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
