"""The input normalisation that goes with a backbone's weights, and the one function that
applies it.

    norm = Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")
    x = norm.apply(uint8_images)           # float32, what the model saw in training

Training's transforms, `tag`, `train export` and the report all take it from run/config.json
(`normalization`), so a pretrained model sees the inputs its weights were trained on. Runs
from before this record get torchvision's ImageNet mean and std, resized bilinearly.

A WD v3 tagger (`train --init-from WD-FOLDER`, train/wd_folder.py) expects `channel_order`
BGR: the channels are reversed after normalising, as SmilingWolf's timm models were trained
(neggles/wdv3-timm#1). `pad_color` records the colour pictures are padded with to a square
(white: what `prep.imaging.prepare_picture` pads with, and what the WD taggers expect).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torchvision.transforms import v2

log = logging.getLogger(__name__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNEL_ORDERS = ("RGB", "BGR")
INTERPOLATIONS = {"bilinear": v2.InterpolationMode.BILINEAR,
                  "bicubic": v2.InterpolationMode.BICUBIC,
                  "nearest": v2.InterpolationMode.NEAREST}


@dataclass(frozen=True)
class Normalization:
    """Mean and std per RGB channel (of [0, 1] values), the resize interpolation, the input
    size the weights were trained at (None: any) and where these came from."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    input_size: int | None = None
    source: str = "imagenet default"
    channel_order: str = "RGB"            # RGB | BGR: the order of the model's input channels
    pad_color: str = "white"              # the colour pictures are padded with to a square

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel order {self.channel_order!r}: RGB or BGR")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.interpolation not in INTERPOLATIONS:
            object.__setattr__(self, "interpolation", "bilinear")

    @property
    def mode(self) -> v2.InterpolationMode:
        """The interpolation as torchvision's enum."""
        return INTERPOLATIONS[self.interpolation]

    def to_dict(self) -> dict:
        """The record written to run/config.json."""
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_record(cls, record: dict | None) -> Normalization:
        """A config.json record back (the ImageNet default for a run without one)."""
        if not isinstance(record, dict):
            return cls()
        known = {"mean", "std", "interpolation", "input_size", "source", "channel_order",
                 "pad_color"}
        return cls(**{k: v for k, v in record.items() if k in known})

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N)CHW RGB images -> normalised float32 in the model's channel order, with
        exactly the operations of training's transforms (torchvision's ToDtype(scale=True),
        Normalize, then the channels reversed for a BGR model)."""
        x = v2.functional.to_dtype(images, torch.float32, scale=True)
        return self.to_model_order(v2.functional.normalize(x, list(self.mean), list(self.std)))

    def to_model_order(self, x: torch.Tensor) -> torch.Tensor:
        """(N)CHW RGB -> the model's channel order (reversed for BGR, else as it is)."""
        return x.flip(-3) if self.channel_order == "BGR" else x

    def transform(self) -> v2.Transform:
        """`apply` as a torchvision transform for a Compose."""
        steps = [v2.ToDtype(torch.float32, scale=True),
                 v2.Normalize(list(self.mean), list(self.std))]
        if self.channel_order == "BGR":
            steps.append(ReverseChannels())
        return v2.Compose(steps)


class ReverseChannels(torch.nn.Module):
    """CHW (or NCHW) RGB -> BGR, as a transform step (picklable for DataLoader workers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-3)


def recorded_in(source: Path) -> Normalization | None:
    """The normalisation recorded by the run `source` (a run folder, or a checkpoint in its
    checkpoints/), or None when it has no record (an older run, or a bare file)."""
    folder = source if source.is_dir() else source.parent.parent
    try:
        record = json.loads((folder / "config.json").read_text()).get("normalization")
    except (OSError, ValueError, AttributeError):
        return None
    return Normalization.from_record(record) if isinstance(record, dict) else None
