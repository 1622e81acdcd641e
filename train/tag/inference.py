"""Inference with a trained run: read images on worker processes, predict in batches.

    run = load_run("run/")                                # train/runs.py: model, tags, settings
    for batch in predict(run, paths, batch_size=32, embed=True):   # workers: one per CPU
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

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from cli_kit.workers import LOADER_CAP, resolve_workers
from prep.image_files import find_images
from prep.imaging import ImageRejected, ImageSettings, prepare_picture

from ..errors import TrainError
from ..precision import autocast_dtype
from ..runs import LoadedRun, probabilities

log = logging.getLogger(__name__)


# -- images --------------------------------------------------------------------------------
def input_images(inputs: Sequence[str | Path], exclude: Sequence[Path] = ()) -> list[Path]:
    """Image files named in `inputs`, and those under the folders in it, each folder's as
    `prep.image_files.find_images` lists them (recursive, hidden files and folders left out,
    sorted by relative path), as `prep make-shards --folder` and `tag review` see them.

    A file named explicitly is taken whatever its suffix; in folders only image suffixes count.
    Paths under `exclude` (the sort-into folder) are left out; duplicates are dropped.
    Raises TrainError for an input that does not exist."""
    skip = [p.resolve() for p in exclude]
    seen: set[Path] = set()
    found: list[Path] = []
    for item in inputs:
        root = Path(item)
        if root.is_dir():
            candidates = find_images(root)
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


def load_picture(data: bytes, size: int, resize: str = "pad", *,
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
        settings = ImageSettings(size=size, resize_mode=resize, animated="first-frame")
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

    def __init__(self, paths: Sequence[Path], size: int, resize: str, *,
                 settings: ImageSettings | None = None,
                 interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR):
        self.paths, self.size, self.resize, self.settings = list(paths), size, resize, settings
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return i, load_picture(self.paths[i].read_bytes(), self.size, self.resize,
                                   settings=self.settings,
                                   interpolation=self.interpolation), None
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


def model_input(run: LoadedRun, images: torch.Tensor) -> torch.Tensor:
    """A uint8 batch of prepared pictures -> the model's input on the run's device, normalised
    as the run's training normalised it (config.json's `normalization`, same operations)."""
    return run.normalization.apply(images.to(run.device, non_blocking=True))


def predict(run: LoadedRun, paths: Sequence[Path], *, batch_size: int = 32,
            workers: int | None = None, embed: bool = False) -> Iterator[Batch]:
    """Batches of predictions for `paths`, in order; unreadable images come back in `failed`.
    `workers`: decoding processes, None = the default of `tag --workers`, 0 = this process."""
    workers = resolve_workers(workers, LOADER_CAP)
    cuda = run.device.type == "cuda"
    images = ImageFiles(paths, run.image_size, run.resize, settings=run.preparation,
                        interpolation=run.normalization.mode)
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
            dtype = autocast_dtype(run.precision)
            with torch.autocast(run.device.type, dtype=dtype or torch.bfloat16,
                                enabled=dtype is not None):
                features = run.model.embed(x)
                logits = run.model.head(features)
            scores = probabilities(logits.float(), run.task).cpu().numpy()
            vectors = features.float().cpu().numpy() if embed else None
            yield Batch(indices, scores, vectors, failed)
