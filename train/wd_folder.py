"""A WD v3 tagger folder, as SmilingWolf publishes them (wd-vit-tagger-v3, wd-convnext-tagger-v3,
wd-swinv2-tagger-v3, ...): read it for `train --init-from FOLDER`.

    folder/config.json          timm: architecture, num_classes, model_args, pretrained_cfg
    folder/model.safetensors    timm's state dict, the classifier included
    folder/selected_tags.csv    tag_id,name,category,count: ratings (9), general (0), character (4)
    folder/model.onnx           (not read here: `tag --model` reads it, train/tag/wd_model.py)

    wd = read_wd_folder(Path("wd-vit-tagger-v3"))
    wd.architecture, wd.model_args, wd.names, wd.normalization(), wd.head_rows()

timm >= 1.0.16 loads the same folder with `create_model("local-dir:FOLDER", pretrained=True)`.
The timm variant expects BGR channels after the usual transform, mean and std 0.5, pictures
padded with white to a square and resized bicubically to the `input_size` of `pretrained_cfg`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from shards.errors import ShardsError
from shards.tags import read_tags

from .errors import TrainError
from .normalization import Normalization

log = logging.getLogger(__name__)
CONFIG, WEIGHTS, TAGS = "config.json", "model.safetensors", "selected_tags.csv"


def is_wd_timm_folder(path: Path) -> bool:
    """A folder with selected_tags.csv, model.safetensors and a timm config.json (one naming
    its `architecture`): a WD v3 tagger's timm files."""
    if not (path / TAGS).is_file() or not (path / WEIGHTS).is_file():
        return False
    try:
        return "architecture" in json.loads((path / CONFIG).read_text())
    except (OSError, ValueError, TypeError):
        return False


@dataclass
class WdFolder:
    """What a WD v3 folder says: the timm model, its preprocessing and its label space."""

    path: Path
    architecture: str
    model_args: dict
    pretrained_cfg: dict
    tags: list[dict]

    @property
    def names(self) -> list[str]:
        """The name of each output of the folder's model, in order."""
        return [t["name"] for t in self.tags]

    @property
    def image_size(self) -> int:
        """The side the model was trained at: `pretrained_cfg.input_size`, else `img_size`."""
        size = self.pretrained_cfg.get("input_size") or self.model_args.get("img_size")
        if isinstance(size, int | float):
            return int(size)
        if not size:
            raise TrainError(f"{self.path / CONFIG}: no input_size in pretrained_cfg and no "
                             "img_size in model_args")
        return int(size[-1])

    def normalization(self) -> Normalization:
        """The preprocessing the folder's weights expect: its mean, std, interpolation and
        size, BGR channel order, white padding."""
        cfg = self.pretrained_cfg
        return Normalization(tuple(cfg.get("mean") or (0.5, 0.5, 0.5)),
                             tuple(cfg.get("std") or (0.5, 0.5, 0.5)),
                             cfg.get("interpolation") or "bicubic", self.image_size,
                             f"WD tagger {self.path / CONFIG}", channel_order="BGR",
                             pad_color="white")

    def classifier(self) -> str:
        """The name of the classifier module (timm's default_cfg for the architecture when
        the folder's `pretrained_cfg.classifier` is null, as in the published folders)."""
        named = self.pretrained_cfg.get("classifier")
        if named:
            return str(named)
        from .backbones.timm_zoo import import_timm
        timm = import_timm()
        try:
            return str(timm.models.get_pretrained_cfg(self.architecture).classifier or "head")
        except (RuntimeError, AttributeError):
            return "head"

    def state(self) -> dict[str, torch.Tensor]:
        """The folder's model.safetensors."""
        from safetensors.torch import load_file
        try:
            return load_file(str(self.path / WEIGHTS))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own kinds
            raise TrainError(f"{self.path / WEIGHTS}: cannot read it ({type(exc).__name__}: "
                             f"{str(exc)[:120]})") from None

    def head_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (outputs, width), bias (outputs,)) of the folder's classifier, one row per
        selected_tags.csv row. Raises TrainError when they are missing or do not match."""
        name, state = self.classifier(), self.state()
        weight, bias = state.get(f"{name}.weight"), state.get(f"{name}.bias")
        if weight is None or bias is None:
            raise TrainError(f"{self.path / WEIGHTS}: no {name}.weight and {name}.bias (the "
                             "classifier config.json names)")
        if weight.ndim != 2 or weight.shape[0] != len(self.tags) or bias.shape != weight.shape[:1]:
            raise TrainError(f"{self.path}: the classifier {name} has {tuple(weight.shape)} "
                             f"weights for {len(self.tags)} rows of {TAGS}")
        return weight, bias


def read_wd_folder(path: Path) -> WdFolder:
    """Read a WD v3 folder's config.json and selected_tags.csv. Raises TrainError (one line)
    for a missing or malformed file."""
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise TrainError(f"--init-from {path}: cannot read {CONFIG} ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        raise TrainError(f"--init-from {path}: {CONFIG} names no timm architecture")
    try:
        tags = read_tags(path / TAGS)
    except ShardsError as exc:
        raise TrainError(f"--init-from {path}: {exc}") from None
    classes = config.get("num_classes")
    if classes is not None and int(classes) != len(tags):
        raise TrainError(f"--init-from {path}: {CONFIG} says {classes} classes, {TAGS} has "
                         f"{len(tags)} rows")
    names = [t["name"] for t in tags]
    if len(set(names)) != len(names):
        raise TrainError(f"--init-from {path}: {TAGS} names a tag twice")
    return WdFolder(path, config["architecture"], dict(config.get("model_args") or {}),
                    dict(config.get("pretrained_cfg") or {}), tags)
