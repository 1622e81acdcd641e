"""Teacher soft targets for the carried tags of an extension run (`--old-tags teacher`).

    teacher = teacher_for_run(model, split, ...)    # once, before the first step
    train_targets = targets.with_teacher(teacher)   # the training stream's targets

A run that starts from a tagger (`--init-from` a WD v3 folder) and keeps its tags trains on
data that rarely labels them: a folder of captioned pictures names a few tags, not the
thousands the tagger knows. Trained as absent, the old tags are forgotten. Instead, the
target of each carried tag the sample's labels do not name is the starting model's own
sigmoid score on that picture (the evaluation transform: resized, no augmentation); a tag
the labels name is 1 (the caption overrides the teacher); added tags follow the labels.

The scores are computed once, on rank 0, before the first step (the model is then the
starting model, also on `--resume`: the checkpoint is restored after), cached in
`run/teacher.npz` (float16, by sample key) with a record of what they belong to (the source,
the carried tags, the train split's shards and counts), and read by every rank. A resumed
run reuses the cache when the record matches, and recomputes it otherwise.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from shards.atomic import write_bytes_atomic
from shards.manifest import Split

from . import distributed
from .data import ShardStream, Targets
from .errors import TrainError
from .loop import autocast

log = logging.getLogger(__name__)
TEACHER_FILE = "teacher.npz"
OLD_TAGS = ("teacher", "labels")


def old_tags_mode(setting: str | None, carried: list[str]) -> str:
    """`--old-tags` resolved: `teacher` by default when the run carries tags from a tagger,
    else `labels`. Raises TrainError for `teacher` without carried tags or an unknown mode."""
    if setting is None:
        return "teacher" if carried else "labels"
    if setting not in OLD_TAGS:
        raise TrainError(f"--old-tags {setting!r}: teacher or labels")
    if setting == "teacher" and not carried:
        raise TrainError("--old-tags teacher needs --init-from a tagger folder whose tags the "
                         "run carries")
    return setting


@dataclass
class TeacherScores:
    """The starting model's scores of the carried outputs (`columns`, positions in the run's
    outputs) for every training sample, by key."""

    columns: np.ndarray              # int64 output positions
    keys: dict[str, int]             # sample key -> row of `scores`
    scores: np.ndarray               # float16, (samples, len(columns))

    def row(self, key: str) -> np.ndarray | None:
        """The scores of one sample, or None for a key the teacher never saw."""
        i = self.keys.get(key)
        return None if i is None else self.scores[i]


def record_of(source: str, carried: list[str], split: Split) -> dict:
    """What a cache belongs to: the source model, the carried tags, the shards and counts."""
    return {"source": str(Path(source).resolve()), "carried": list(carried),
            "shards": [[str(u), int(c)] for u, c in zip(split.urls, split.shard_counts(),
                                                        strict=True)]}


def teacher_for_run(model: nn.Module, split: Split, targets: Targets, *, transform,
                    columns: list[int],
                    record: dict, out: Path, device: torch.device, precision: str,
                    batch_size: int, workers: int) -> TeacherScores:
    """The cached teacher scores of `out` when its record is `record`, else computed on rank 0
    with `model` (the starting model) and cached; every rank returns the same scores."""
    cache = out / TEACHER_FILE
    if distributed.is_main():
        cached = read_cache(cache, record)
        if cached is None:
            if cache.exists():
                log.warning("%s belongs to another source, tags or shards: computing the "
                            "teacher's scores again", cache)
            keys, scores = _scores(model, split, targets, transform, columns, device,
                                   precision, batch_size, workers)
            write_cache(cache, record, columns, keys, scores)
            log.info("teacher: the starting model's scores of %d carried tags on %d training "
                     "samples, cached in %s", len(columns), len(keys), cache)
        else:
            log.info("teacher: reusing %s (%d samples)", cache, len(cached.keys))
    distributed.barrier()
    teacher = read_cache(cache, record)
    if teacher is None:
        raise TrainError(f"{cache} is missing or unreadable after rank 0 wrote it: every rank "
                         "must see the same --out")
    return teacher


def write_cache(path: Path, record: dict, columns: list[int], keys: list[str],
                scores: np.ndarray) -> None:
    """The cache file, written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, record=np.array(json.dumps(record, sort_keys=True)),
             columns=np.asarray(columns, dtype=np.int64), keys=np.asarray(keys, dtype=str),
             scores=scores.astype(np.float16))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())


def read_cache(path: Path, record: dict) -> TeacherScores | None:
    """The cache at `path` when it exists and belongs to `record`, else None."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if json.loads(str(f["record"])) != json.loads(json.dumps(record, sort_keys=True)):
                return None
            keys = [str(k) for k in f["keys"]]
            return TeacherScores(columns=f["columns"].astype(np.int64),
                                 keys={k: i for i, k in enumerate(keys)},
                                 scores=f["scores"].astype(np.float16))
    except (OSError, ValueError, KeyError) as exc:
        log.warning("%s is unreadable (%s)", path, exc)
        return None


@torch.no_grad()
def _scores(model: nn.Module, split: Split, targets: Targets, transform, columns: list[int],
            device: torch.device, precision: str, batch_size: int,
            workers: int) -> tuple[list[str], np.ndarray]:
    """Every sample of `split` once (one stream, no shuffle): keys and the sigmoid scores of
    the `columns` outputs."""
    stream = ShardStream(split, targets, transform, shuffle=False,
                         exact=False, rank=0, world=1)
    loader = DataLoader(stream, batch_size=batch_size, num_workers=workers)
    cols = torch.as_tensor(columns, dtype=torch.long)
    was_training = model.training
    model.eval()
    keys: list[str] = []
    rows: list[np.ndarray] = []
    try:
        for x, _, batch_keys in loader:
            with autocast(device, precision):
                logits = model(x.to(device)).float()
            rows.append(torch.sigmoid(logits[:, cols.to(logits.device)]).cpu().numpy())
            keys.extend(batch_keys)
    finally:
        model.train(was_training)
    if len(set(keys)) != len(keys):
        raise TrainError("the training split repeats a sample key: the teacher's scores "
                         "are kept by key")
    scores = np.concatenate(rows) if rows else np.zeros((0, len(columns)), np.float32)
    return keys, scores
