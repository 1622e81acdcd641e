"""Multi-label evaluation: scores (n, T) in [0, 1], targets (n, T) in {0, 1}.

macro mAP (average precision per tag with at least one positive, as sklearn's
average_precision_score: tied scores are one threshold, so row order never matters), micro and
macro F1 at a fixed threshold and at the global threshold where precision equals recall,
per-tag best-F1 thresholds (with a fallback to the global one below `min_support` positives),
and the same metrics sliced by tag frequency rank and by category.

Scores are float32 and everything runs over `CHUNK` tags at a time, so 50,000 images x 5,000
tags need a few hundred MB beyond the two input matrices (bench/eval.py).
"""

from __future__ import annotations

import numpy as np

CHUNK = 128
PR_GRID = np.linspace(0.01, 0.99, 99)
# Not below 0.1: for a tag the model has not learned, "everything" maximises F1.
F1_GRID = np.linspace(0.1, 0.9, 41)


def _chunks(tags: int, size: int = CHUNK):
    for start in range(0, tags, size):
        yield slice(start, min(tags, start + size))


def _inputs(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    scores = scores.numpy() if hasattr(scores, "numpy") else np.asarray(scores)
    targets = targets.numpy() if hasattr(targets, "numpy") else np.asarray(targets)
    return scores.astype(np.float32, copy=False), targets.astype(bool, copy=False)


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP per column; NaN where a column has no positive. A run of tied scores counts as one
    threshold: every positive in it gets the precision at the run's end (as sklearn)."""
    scores, targets = _inputs(scores, targets)
    n, tags = scores.shape
    ap = np.full(tags, np.nan)
    rows = np.arange(n)[:, None]
    for cols in _chunks(tags):
        order = np.argsort(-scores[:, cols], axis=0, kind="stable")
        ranked = np.take_along_axis(scores[:, cols], order, axis=0)
        hits = np.take_along_axis(targets[:, cols], order, axis=0)
        precision = np.cumsum(hits, axis=0, dtype=np.float64) / (rows + 1)
        run_end = np.ones(ranked.shape, bool)
        run_end[:-1] = ranked[:-1] != ranked[1:]
        # for each row, the last row of its run of ties: a reverse running minimum
        ends = np.where(run_end, rows, n)
        ends = np.minimum.accumulate(ends[::-1], axis=0)[::-1]
        at_end = np.take_along_axis(precision, ends, axis=0)
        positives = hits.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap[cols] = np.where(positives > 0, (at_end * hits).sum(axis=0) / positives, np.nan)
    return ap


def confusion(scores: np.ndarray, targets: np.ndarray, threshold) -> tuple[np.ndarray, ...]:
    """(tp, fp, fn) per tag at one threshold (a scalar or one per tag), as float64. A scalar
    compares in float32 like the scores (a score shown as 0.4 passes 0.4), an array in float64
    (numpy's own promotion, kept so the numbers stay those of earlier runs)."""
    scores, targets = _inputs(scores, targets)
    kind = np.float32 if np.ndim(threshold) == 0 else np.float64
    threshold = np.broadcast_to(np.asarray(threshold, dtype=kind), scores.shape[1:])
    tp, fp, fn = (np.zeros(scores.shape[1]) for _ in range(3))
    for cols in _chunks(scores.shape[1]):
        pred = scores[:, cols] >= threshold[cols]
        t = targets[:, cols]
        tp[cols] = (pred & t).sum(axis=0)
        fp[cols] = (pred & ~t).sum(axis=0)
        fn[cols] = (~pred & t).sum(axis=0)
    return tp, fp, fn


def _f1_from(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict:
    micro_p = tp.sum() / max(tp.sum() + fp.sum(), 1)
    micro_r = tp.sum() / max(tp.sum() + fn.sum(), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_tag = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    has_pos = (tp + fn) > 0
    return {"micro_f1": _f1(micro_p, micro_r), "micro_precision": micro_p,
            "micro_recall": micro_r,
            "macro_f1": float(np.nanmean(per_tag[has_pos])) if has_pos.any() else 0.0}


def f1_at(scores: np.ndarray, targets: np.ndarray, threshold) -> dict:
    """Micro and macro precision/recall/F1 at one threshold (a scalar or one per tag)."""
    return _f1_from(*confusion(scores, targets, threshold))


def _f1(p: float, r: float) -> float:
    return float(2 * p * r / (p + r)) if p + r > 0 else 0.0


def grid_counts(scores: np.ndarray, targets: np.ndarray,
                grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted, tp), each (len(grid), T): how many scores are >= each grid value, and how
    many of those are positives; one pass over the scores for the whole grid."""
    scores, targets = _inputs(scores, targets)
    k, tags = len(grid), scores.shape[1]
    predicted, tp = np.zeros((k, tags)), np.zeros((k, tags))
    for cols in _chunks(tags):
        width = cols.stop - cols.start
        above = np.searchsorted(grid, scores[:, cols], side="right")   # grid values <= score
        flat = above + (k + 1) * np.arange(width)[None, :]
        for out, picked in ((predicted, flat), (tp, flat[targets[:, cols]])):
            hist = np.bincount(picked.ravel(), minlength=(k + 1) * width).reshape(width, k + 1)
            at_least = hist[:, ::-1].cumsum(axis=1)[:, ::-1]          # [:, j]: above >= j
            out[:, cols] = at_least[:, 1:].T                         # score >= grid[j-1]
    return predicted, tp


def pr_equal_threshold(scores: np.ndarray, targets: np.ndarray, counts=None) -> float:
    """The global threshold where micro precision and recall are closest (SW's "P=R")."""
    predicted, tp = counts if counts is not None else grid_counts(scores, targets, PR_GRID)
    positives = np.asarray(targets).sum()
    best, gap = 0.5, np.inf
    for th, pred, hit in zip(PR_GRID, predicted.sum(axis=1), tp.sum(axis=1), strict=True):
        p, r = hit / max(pred, 1), hit / max(positives, 1)
        if p == 0 and r == 0:
            continue
        if abs(p - r) < gap:
            best, gap = float(th), abs(p - r)
    return best


def best_thresholds(scores: np.ndarray, targets: np.ndarray, fallback: float,
                    min_support: int = 5, counts=None) -> np.ndarray:
    """Per-tag threshold maximising F1; tags with fewer positives get `fallback`."""
    predicted, tp = counts if counts is not None else grid_counts(scores, targets, F1_GRID)
    positives = _inputs(scores, targets)[1].sum(axis=0)
    best_f1 = np.full(len(positives), -1.0)
    best = np.full(len(positives), fallback)
    for th, pred, hit in zip(F1_GRID, predicted, tp, strict=True):
        f1 = 2 * hit / np.maximum(pred + positives, 1)
        better = f1 > best_f1
        best[better], best_f1[better] = th, f1[better]
    best[positives < min_support] = fallback
    return best


def evaluate(scores: np.ndarray, targets: np.ndarray, categories: np.ndarray | None = None,
             counts: np.ndarray | None = None, threshold: float = 0.4,
             min_support: int = 5) -> dict:
    """Every metric of the eval report; `counts` orders tags by frequency for the slices."""
    scores, targets = _inputs(scores, targets)
    ap = average_precision(scores, targets)
    grid = np.unique(np.concatenate([PR_GRID, F1_GRID]))
    predicted, tp = grid_counts(scores, targets, grid)
    pr_rows, f1_rows = np.searchsorted(grid, PR_GRID), np.searchsorted(grid, F1_GRID)
    pr = pr_equal_threshold(scores, targets, (predicted[pr_rows], tp[pr_rows]))
    per_tag = best_thresholds(scores, targets, pr, min_support,
                              (predicted[f1_rows], tp[f1_rows]))
    at_threshold = confusion(scores, targets, threshold)
    out = {"mAP": _nanmean(ap), "threshold": threshold, "pr_threshold": pr,
           **_prefixed(_f1_from(*at_threshold), "at_threshold_"),
           **_prefixed(f1_at(scores, targets, pr), "at_pr_"),
           **_prefixed(f1_at(scores, targets, per_tag), "per_tag_"),
           "tags_with_positives": int(np.isfinite(ap).sum()), "samples": int(len(scores))}
    slices = {}
    if counts is not None:
        rank = np.argsort(-counts, kind="stable")
        for name, idx in (("top100", rank[:100]), ("top1000", rank[:1000]),
                          ("rest", rank[1000:])):
            if len(idx):
                slices[name] = _slice(at_threshold, ap, idx)
    if categories is not None:
        for cat in np.unique(categories):
            slices[f"category_{int(cat)}"] = _slice(at_threshold, ap,
                                                    np.flatnonzero(categories == cat))
    out["slices"] = slices
    out["per_tag"] = {"ap": ap.tolist(), "threshold": per_tag.tolist()}
    return out


def _slice(at_threshold: tuple[np.ndarray, ...], ap: np.ndarray, idx: np.ndarray) -> dict:
    m = _f1_from(*(a[idx] for a in at_threshold))
    return {"tags": int(len(idx)), "mAP": _nanmean(ap[idx]), "micro_f1": m["micro_f1"],
            "macro_f1": m["macro_f1"]}


def _nanmean(a: np.ndarray) -> float:
    return float(np.nanmean(a)) if np.isfinite(a).any() else 0.0


def _prefixed(d: dict, prefix: str) -> dict:
    return {prefix + k: float(v) for k, v in d.items()}
