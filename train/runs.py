"""A trained run, loaded: its model, label space, preparation, probabilities and thresholds.

    run = load_run("run/", device="cpu")       # model in eval mode, tags, settings
    run.names, run.categories                  # the label space: one name and category per output
    run.preparation, run.normalization         # how a picture is made and normalised for it
    probabilities(logits, run.task)            # sigmoid per tag (softmax for multiclass)
    thresholds(run, per_tag=True)              # one threshold per output; select() applies them

`tag`, `tag review`, `train report` and `train export` read a run through this module, as peers.
`resize` is always one of prep's resize modes (`prep.imaging.RESIZE_MODES`: pad, keep_ratio,
center_crop, none), the name the shards' manifest records.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from prep.imaging import RESIZE_MODES, ImageSettings
from shards.errors import ShardsError
from shards.manifest import read_manifest
from shards.tags import read_tags

from .errors import TrainError
from .models import Tagger, build_model
from .normalization import Normalization
from .precision import resolve_precision

log = logging.getLogger(__name__)
OLD_RESIZE_NAMES = {"stretch": "keep_ratio"}   # tag's deprecated --resize spelling -> prep's
GENERAL, CHARACTER, RATING = 0, 4, 9
NEGATIVE = -1              # category of the "not_<positive>" label of a binary run


@dataclass(kw_only=True)
class LoadedRun:
    """A trained run ready to predict: the model in eval mode on `device`, and its label space
    (built by keyword: `load_run` makes one)."""

    path: Path
    model: Tagger
    tags: list[dict]             # rows of run/tags.csv
    config: dict                 # run/config.json
    task: str                    # multilabel | multiclass | binary
    positive: str | None         # binary: the class that is present
    image_size: int
    resize: str                  # prep's RESIZE_MODES: pad | keep_ratio | center_crop | none
    device: torch.device
    precision: str               # bf16 | fp16 | fp32
    preparation: ImageSettings | None = None  # how pictures are made (None: as `resize` says)
    normalization: Normalization = Normalization()  # config.json's: what the weights expect

    @property
    def names(self) -> list[str]:
        """The name of each model output."""
        return [self.positive] if self.task == "binary" else [t["name"] for t in self.tags]

    @property
    def categories(self) -> np.ndarray:
        if self.task == "binary":
            return np.array([self._category(self.positive)])
        return np.array([t["category"] for t in self.tags])

    def _category(self, name: str | None) -> int:
        return next((t["category"] for t in self.tags if t["name"] == name), GENERAL)


def load_run(path: str | Path, *, device: str = "auto", precision: str = "auto",
             resize: str = "auto") -> LoadedRun:
    """Load run/config.json, run/tags.csv and run/model.safetensors, the model on `device`.

    `precision` is one of PRECISIONS (`auto` as `train` resolves it); `resize` is `auto` (as
    the run's shards were made) or one of prep's RESIZE_MODES. Raises TrainError when a file
    is missing or the weights do not fit the configured model."""
    path = Path(path)
    if not path.is_dir():
        raise TrainError(f"{path}: no such run folder")
    for name in ("config.json", "tags.csv", "model.safetensors"):
        if not (path / name).is_file():
            raise TrainError(f"{path}: no {name} there (is it a finished `train` run?)")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise TrainError(f"cannot read {path / 'config.json'}: {exc}") from None
    try:
        tags = read_tags(path / "tags.csv")
    except ShardsError as exc:
        raise TrainError(str(exc)) from None
    task = config.get("task") or "multilabel"
    positive = config.get("positive") or (tags[0]["name"] if task == "binary" else None)
    outputs = 1 if task == "binary" else len(tags)
    from safetensors.torch import load_file
    image_size = int(config.get("image_size", 224))
    model = build_model(config.get("model", "resnet50"), outputs, weights="none",
                        head=config.get("head", "linear"), dropout=config.get("dropout", 0.2),
                        image_size=image_size)
    try:
        model.load_state_dict(load_file(str(path / "model.safetensors")))
    except (RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise TrainError(f"{path / 'model.safetensors'} does not fit a {config.get('model')} "
                         f"with {outputs} outputs: {first}") from None
    dev = _device(device)
    prec = resolve_precision(precision, dev)
    model = model.eval().to(dev, memory_format=torch.channels_last if dev.type == "cuda"
                            else torch.preserve_format)
    settings = preparation(config, image_size, resize)
    return LoadedRun(path=path, model=model, tags=tags, config=config, task=task,
                     positive=positive, image_size=image_size, resize=settings.resize_mode,
                     device=dev, precision=prec, preparation=settings,
                     normalization=Normalization.from_record(config.get("normalization")))


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda: no CUDA device is available")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainError(f"--device {name}: not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise TrainError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices")
    return device


def _shards_resize(config: dict) -> str:
    """How the training shards were resized (their manifest's `image.resize_mode`)."""
    try:
        mode = read_manifest(str(config.get("shards", "")))["image"]["resize_mode"]
    except (ShardsError, KeyError, TypeError):
        return "pad"
    return mode if mode in RESIZE_MODES else "pad"


def preparation(config: dict, image_size: int, resize: str = "auto") -> ImageSettings:
    """How `tag` prepares a picture for a run: the image settings of the shards it learnt from
    (config.json's `preparation`, which `train` records from the shards' manifest), as
    `make-shards` applied them; `resize` other than `auto` (one of prep's RESIZE_MODES)
    replaces their resize mode. Raises TrainError for another name.
    A run from before `preparation` was recorded gets its
    `image_size`, enlarged when smaller, resized as its shards' manifest says (pad when
    unreadable)."""
    recorded = config.get("preparation")
    if isinstance(recorded, dict):
        known = {f.name for f in fields(ImageSettings)}
        settings = ImageSettings(**{k: v for k, v in recorded.items() if k in known})
    else:
        settings = ImageSettings(size=image_size, resize_mode=_shards_resize(config))
    if resize != "auto":
        if resize not in RESIZE_MODES:
            raise TrainError(f"resize mode {resize!r}: not one of {', '.join(RESIZE_MODES)}")
        settings = replace(settings, resize_mode=resize)
    return replace(settings, animated="first-frame")  # tag an animation by its first frame



def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """A run's logits -> its scores: softmax over the classes of a multiclass run, else a
    sigmoid per output."""
    return torch.softmax(logits, dim=1) if task == "multiclass" else torch.sigmoid(logits)



# -- thresholds and selection ----------------------------------------------------------------
class Tag(NamedTuple):
    name: str
    category: int
    score: float


def thresholds(run: LoadedRun, threshold: float | None = None, *, per_tag: bool = False,
               general: float | None = None, character: float | None = None) -> np.ndarray:
    """One threshold per output: global (`threshold`, default the run's evaluation threshold,
    0.5 for a binary run) or per tag (eval.json's best-F1 thresholds), then the general and
    character overrides for the tags of those categories. Raises TrainError without eval.json
    per-tag thresholds when they are asked for."""
    n = len(run.names)
    if per_tag:
        try:
            values = json.loads((run.path / "eval.json").read_text())["per_tag"]["threshold"]
        except (OSError, ValueError, KeyError, TypeError):
            raise TrainError(f"--per-tag-thresholds: {run.path / 'eval.json'} has no per-tag "
                             "thresholds (the run had no validation split?)") from None
        if len(values) != n:
            raise TrainError(f"--per-tag-thresholds: eval.json has {len(values)} thresholds "
                             f"for {n} outputs")
        out = np.asarray(values, dtype=np.float64)
    else:
        default = 0.5 if run.task == "binary" else float(run.config.get("threshold", 0.4))
        out = np.full(n, default if threshold is None else threshold, dtype=np.float64)
    categories = run.categories
    if general is not None:
        out[categories == GENERAL] = general
    if character is not None:
        out[categories == CHARACTER] = character
    return out


def select(run: LoadedRun, scores: np.ndarray, limits: np.ndarray) -> list[Tag]:
    """The labels of one image, best first.

    multilabel: every non-rating tag at or over its threshold, and the one best rating tag
    (the rating is an argmax, as in the WD taggers); multiclass: the best class; binary: the
    positive class at or over the threshold, else `not_<positive>` with score 1 - p."""
    names, categories = run.names, run.categories
    if run.task == "binary":
        p = float(scores[0])
        if p >= limits[0]:
            return [Tag(names[0], int(categories[0]), p)]
        return [Tag(negative_name(run.positive), NEGATIVE, 1.0 - p)]
    if run.task == "multiclass":
        best = int(np.argmax(scores))
        return [Tag(names[best], int(categories[best]), float(scores[best]))]
    rating = categories == RATING
    picked = np.flatnonzero((scores >= limits) & ~rating)
    if rating.any():
        ratings = np.flatnonzero(rating)
        picked = np.append(picked, ratings[np.argmax(scores[ratings])])
    picked = picked[np.argsort(-scores[picked], kind="stable")]
    return [Tag(names[i], int(categories[i]), float(scores[i])) for i in picked]


def negative_name(positive: str | None) -> str:
    return f"not_{positive}"
