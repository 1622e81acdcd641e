"""The model's scores for a folder under review, computed once and kept beside the images.

    IMAGES/.review/predictions.jsonl   `tag --output` rows (path relative to IMAGES, tags,
                                       scores, error): each image's `KEEP` best tags

Only images without a row are predicted (all of them again when the run's weights are newer
than the file). An image without a caption file gets the one `tag --captions` would write.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from prep.image_files import find_images

from ...runs import LoadedRun, select
from ..captions import CaptionStyle, caption, write_caption
from ..inference import predict
from ..output import TagTable
from .store import REVIEW_DIR, Prediction

log = logging.getLogger(__name__)
PREDICTIONS = "predictions.jsonl"
KEEP = 25                # tags kept per image (those over their threshold are always kept)


def read_predictions(path: Path) -> dict[str, Prediction]:
    """Rows of a predictions file by relative path; {} when there is none."""
    out: dict[str, Prediction] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            row = json.loads(line)
            out[row["path"]] = Prediction(list(row["tags"]), [float(s) for s in row["scores"]],
                                          row.get("error"))
        except (ValueError, KeyError, TypeError):
            log.warning("%s: skipping a bad line", path)
    return out


def ensure_predictions(root: Path, run: LoadedRun, limits: np.ndarray, *,
                       style: CaptionStyle = CaptionStyle(), batch_size: int = 32,
                       workers: int | None = None) -> tuple[dict[str, Prediction], int, int]:
    """Predict the images of `root` that have no row yet, write the captions that are missing.
    Returns (predictions by relative path, images predicted now, captions written)."""
    path = root / REVIEW_DIR / PREDICTIONS
    known = read_predictions(path)
    weights = run.path / "model.safetensors"
    if known and weights.stat().st_mtime > path.stat().st_mtime:
        log.info("%s is newer than %s: predicting every image again", weights, path)
        known = {}
    images = find_images(root)
    todo = [p for p in images if p.relative_to(root).as_posix() not in known]
    written, index = 0, {name: j for j, name in enumerate(run.names)}
    for batch in predict(run, todo, batch_size=batch_size, workers=workers):
        for k, i in enumerate(batch.indices):
            scores = batch.scores[k]
            chosen = select(run, scores, limits)
            best = [int(j) for j in np.argsort(-scores, kind="stable")[:KEEP]]
            picked = list(dict.fromkeys([index[t.name] for t in chosen if t.name in index]
                                        + best))
            picked.sort(key=lambda j: -scores[j])
            known[todo[i].relative_to(root).as_posix()] = Prediction(
                [run.names[j] for j in picked], [float(scores[j]) for j in picked], None)
            if write_caption(todo[i], caption(chosen, style), style) == "written":
                written += 1
        for i, error in batch.failed:
            known[todo[i].relative_to(root).as_posix()] = Prediction([], [], error)
    if todo or not path.exists():
        path.parent.mkdir(exist_ok=True)
        table = TagTable(path)
        table.write([{"path": rel, "tags": p.tags, "scores": p.scores, "error": p.error}
                     for rel, p in sorted(known.items())])
        table.close()
    return known, len(todo), written
