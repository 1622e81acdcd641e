"""The run's model over its validation shards: a (samples, outputs) score matrix and targets.

    val = validation_scores(run, "shards/")      # run = runs.load_run("run/")
    val.scores (n, T) float32, val.targets (n, T) uint8, val.keys, val.tags (true tags)

Each sample's truth is its `label_ids`, as make-shards recorded them (shards/labels.py), through
the rows of the shards' own tags.csv.

Samples are read with the shards' reader (shards/reader.py), decoded and resized by training's
own evaluation transform (data.transforms), so the numbers are the run's evaluation numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from shards import ManifestError, TagsError, read_manifest, read_shards, read_tags
from shards.errors import LabelsError
from shards.format import TAGS, join_location, manifest_location
from shards.labels import label_ids

from ..data import Targets, decode_image, transforms
from ..errors import TrainError
from ..precision import autocast_dtype
from ..runs import LoadedRun, probabilities

log = logging.getLogger(__name__)


@dataclass
class ValScores:
    keys: list[str]              # sample keys, in shard order
    tags: list[list[str]]        # each sample's true labels (those of the run), in row order
    scores: np.ndarray           # (n, outputs) probabilities, float32
    targets: np.ndarray          # (n, outputs) 0/1, uint8


def validation_scores(run: LoadedRun, shards: str, *, batch_size: int = 64,
                      quiet: bool = False) -> ValScores:
    """Score every validation sample of `shards` with `run`'s model.

    Raises TrainError when the shards cannot be read or have no validation samples."""
    try:
        manifest = read_manifest(shards)
    except ManifestError as exc:
        raise TrainError(f"cannot read the validation shards: {exc}") from None
    total = sum(s.get("successes") or 0 for s in
                manifest.get("splits", {}).get("val", {}).get("shards", []))
    rows = _shard_rows(shards)
    targets = Targets(run.names, run.task, run.positive, rows)
    known = set(run.names)
    keys, tags, scores, truth = [], [], [], []
    try:
        batches = _batches(read_shards(shards, "val", image="bytes"), batch_size)
        with tqdm(total=total or None, unit="img", desc="report: scoring",
                  disable=True if quiet else None) as bar:
            for batch in batches:
                kept = []
                for sample in batch:
                    ids = label_ids(sample["meta"], sample["__key__"])
                    try:
                        target = targets(ids)
                    except ValueError as exc:     # a multiclass sample without one class
                        log.warning("report: leaving out sample %s: %s", sample["__key__"], exc)
                        continue
                    kept.append(sample)
                    keys.append(sample["__key__"])
                    tags.append([rows[i] for i in ids if rows[i] in known])
                    truth.append(target.numpy().astype(np.uint8))
                if kept:
                    scores.append(_score(run, [s["image"] for s in kept]))
                bar.update(len(batch))
    except (ManifestError, LabelsError) as exc:
        raise TrainError(f"cannot read the validation shards: {exc}") from None
    if not keys:
        raise TrainError(f"{shards}: no validation samples to judge the model on")
    return ValScores(keys, tags, np.concatenate(scores), np.stack(truth))


def _shard_rows(shards: str) -> list[str]:
    """The row names of the shards' tags.csv, which their label_ids index."""
    _, base = manifest_location(shards)
    try:
        return [t["name"] for t in read_tags(join_location(base, TAGS))]
    except TagsError as exc:
        raise TrainError(f"cannot read the validation shards' tag index: {exc}") from None


def _batches(samples: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.inference_mode()
def _score(run: LoadedRun, images: list[bytes]) -> np.ndarray:
    prepare = transforms(run.image_size, train=False, normalization=run.normalization)
    x = torch.stack([prepare(decode_image(data)) for data in images]).to(run.device)
    dtype = autocast_dtype(run.precision)
    with torch.autocast(run.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        logits = run.model(x)
    return probabilities(logits.float(), run.task).cpu().numpy().astype(np.float32)
