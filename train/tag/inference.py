"""Inference with a trained run: load `run/`, read images on worker processes, predict in batches.

    run = load_run("run/")                                # model, tags and settings, eval mode
    for batch in predict(run, paths, batch_size=32, workers=2, embed=True):
        batch.indices, batch.scores (n, outputs), batch.embeddings (n, width), batch.failed

    files ─▶ DataLoader workers: read, decode, orient, flatten alpha, pad/crop, resize (uint8)
          ─▶ main process: normalise on the device ─▶ model (bf16 autocast on a GPU)
          ─▶ probabilities (sigmoid; softmax for a multiclass run) and pooled features

Images are prepared by the function that made the shards the model learnt from
(`prep.imaging.prepare_picture`, the one function that makes a picture for both), with the image
settings `train` recorded in run/config.json (`preparation`), then resized to the run's image
size as training evaluates. An unreadable image is a failure of that image only: it comes back
in `failed`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from prep.imaging import IMAGE_SUFFIXES, ImageRejected, ImageSettings, prepare_picture
from shards.errors import ShardsError
from shards.manifest import read_manifest
from shards.tags import read_tags

from ..errors import TrainError
from ..models import Tagger, build_model
from ..normalization import Normalization

log = logging.getLogger(__name__)
RESIZE_MODES = ("pad", "center_crop", "stretch")      # tag's deprecated --resize names
PREP_MODES = {"pad": "pad", "center_crop": "center_crop", "stretch": "keep_ratio",
               "keep_ratio": "keep_ratio", "none": "none"}   # either name -> prep's
GENERAL, CHARACTER, RATING = 0, 4, 9
NEGATIVE = -1              # category of the "not_<positive>" label of a binary run


@dataclass
class LoadedRun:
    """A trained run ready to predict: the model in eval mode on `device`, and its label space."""

    path: Path
    model: Tagger
    tags: list[dict]             # rows of run/tags.csv
    config: dict                 # run/config.json
    task: str                    # multilabel | multiclass | binary
    positive: str | None         # binary: the class that is present
    image_size: int
    resize: str                  # pad | center_crop | stretch
    device: torch.device
    precision: str               # bf16 | fp32
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


def load_run(path: str | Path, device: str = "auto", precision: str = "auto",
             resize: str = "auto") -> LoadedRun:
    """Load run/config.json, run/tags.csv and run/model.safetensors
    (docs/DESIGN.md, "Boundary 4: a training run (run/)").

    Raises TrainError when a file is missing or the weights do not fit the configured model."""
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
                        image_size=image_size, model_args=config.get("model_args"))
    try:
        model.load_state_dict(load_file(str(path / "model.safetensors")))
    except (RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise TrainError(f"{path / 'model.safetensors'} does not fit a {config.get('model')} "
                         f"with {outputs} outputs: {first}") from None
    dev = _device(device)
    prec = precision if precision != "auto" else "bf16" if dev.type == "cuda" else "fp32"
    model = model.eval().to(dev, memory_format=torch.channels_last if dev.type == "cuda"
                            else torch.preserve_format)
    settings = preparation(config, image_size, resize)
    name = {"pad": "pad", "center_crop": "center_crop"}.get(settings.resize_mode, "stretch")
    return LoadedRun(path, model, tags, config, task, positive, image_size, name, dev, prec,
                     settings, Normalization.from_record(config.get("normalization")))


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
    return mode if mode in {"pad", "center_crop"} else "keep_ratio"


# -- images --------------------------------------------------------------------------------
def find_images(inputs: Sequence[str | Path], exclude: Sequence[Path] = ()) -> list[Path]:
    """Image files named in `inputs`, and those under the folders in it (recursively, sorted).

    A file named explicitly is taken whatever its suffix; in folders only image suffixes count.
    Paths under `exclude` (the sort-into folder) are left out; duplicates are dropped.
    Raises TrainError for an input that does not exist."""
    skip = [p.resolve() for p in exclude]
    seen: set[Path] = set()
    found: list[Path] = []
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            candidates = sorted(p for p in root.rglob("*")
                                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif root.is_file():
            candidates = [root]
        else:
            raise TrainError(f"{root}: no such file or folder")
        for p in candidates:
            resolved = p.resolve()
            if resolved in seen or any(resolved.is_relative_to(s) for s in skip):
                continue
            seen.add(resolved)
            found.append(p)
    return found


def preparation(config: dict, image_size: int, resize: str = "auto") -> ImageSettings:
    """How `tag` prepares a picture for a run: the image settings of the shards it learnt from
    (config.json's `preparation`, which `train` records from the shards' manifest), as
    `make-shards` applied them; `resize` other than `auto` (prep's pad, keep_ratio,
    center_crop, none; or stretch, tag's old name of keep_ratio) replaces their resize mode.
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
        settings = replace(settings, resize_mode=PREP_MODES[resize])
    return replace(settings, animated="first-frame")  # tag an animation by its first frame


def load_picture(data: bytes, size: int, resize: str = "pad",
                 settings: ImageSettings | None = None,
                 interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR
                 ) -> torch.Tensor:
    """Encoded image bytes -> uint8 (3, size, size) tensor, as the model saw its shards.

    The picture is made by `prep.imaging.prepare_picture` with `settings` (default: `size`
    and `resize`, the preparation of a run without recorded settings), then resized to a
    `size` square as training's evaluation transform resizes a shard image (with the run's
    `interpolation`). Raises ValueError
    for a file that is not a readable image."""
    if settings is None:
        settings = ImageSettings(size=size, resize_mode=PREP_MODES[resize],
                                 animated="first-frame")
    try:
        picture = prepare_picture(data, settings).picture
    except ImageRejected as exc:
        raise ValueError(exc.message) from None
    x = torch.from_numpy(np.asarray(picture, dtype=np.uint8).copy()).permute(2, 0, 1)
    if tuple(x.shape[1:]) != (size, size):
        x = v2.functional.resize(x, [size, size], interpolation=interpolation, antialias=True)
    return x


class ImageFiles(Dataset):
    """(index, uint8 image or None, error or None) for each path; decoding runs in workers."""

    def __init__(self, paths: Sequence[Path], size: int, resize: str,
                 settings: ImageSettings | None = None,
                 interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR):
        self.paths, self.size, self.resize, self.settings = list(paths), size, resize, settings
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, load_picture(self.paths[i].read_bytes(), self.size, self.resize,
                                   self.settings, self.interpolation), None
        except Exception as exc:  # noqa: BLE001 - one bad file is reported, never fatal
            return i, None, f"{type(exc).__name__}: {exc}"[:300]


def collate(items: list) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]:
    good = [(i, x) for i, x, err in items if err is None]
    images = torch.stack([x for _, x in good]) if good else None
    return images, [i for i, _ in good], [(i, err) for i, _, err in items if err is not None]


# -- prediction ----------------------------------------------------------------------------
@dataclass
class Batch:
    indices: list[int]                 # positions in the path list of the images predicted
    scores: np.ndarray                 # (n, outputs) probabilities
    embeddings: np.ndarray | None      # (n, width) pooled features, with embed=True
    failed: list[tuple[int, str]]      # (position, reason) of the images that could not be read


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    return torch.softmax(logits, dim=1) if task == "multiclass" else torch.sigmoid(logits)


def model_input(run: LoadedRun, images: torch.Tensor) -> torch.Tensor:
    """A uint8 batch of prepared pictures -> the model's input on the run's device, normalised
    as the run's training normalised it (config.json's `normalization`, same operations)."""
    return run.normalization.apply(images.to(run.device, non_blocking=True))


def predict(run: LoadedRun, paths: Sequence[Path], batch_size: int = 32, workers: int = 2,
            embed: bool = False) -> Iterator[Batch]:
    """Batches of predictions for `paths`, in order; unreadable images come back in `failed`."""
    cuda = run.device.type == "cuda"
    images = ImageFiles(paths, run.image_size, run.resize, run.preparation,
                        run.normalization.mode)
    loader = DataLoader(images, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                        pin_memory=cuda,
                        prefetch_factor=4 if workers else None)
    with torch.inference_mode():
        for images, indices, failed in loader:
            if images is None:
                yield Batch([], np.zeros((0, len(run.names)), np.float32), None, failed)
                continue
            x = model_input(run, images)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(run.device.type, dtype=torch.bfloat16,
                                enabled=run.precision == "bf16"):
                features = run.model.embed(x)
                logits = run.model.head(features)
            scores = probabilities(logits.float(), run.task).cpu().numpy()
            vectors = features.float().cpu().numpy() if embed else None
            yield Batch(indices, scores, vectors, failed)


# -- thresholds and selection ----------------------------------------------------------------
class Tag(NamedTuple):
    name: str
    category: int
    score: float


def thresholds(run: LoadedRun, threshold: float | None = None, per_tag: bool = False,
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

