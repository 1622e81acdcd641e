"""Multi-label evaluation on numpy arrays: scores (n, T) in [0, 1], targets (n, T) in {0, 1}.

macro mAP (average precision per tag with at least one positive, no interpolation, as
sklearn's average_precision_score), micro and macro F1 at a fixed threshold and at the global
threshold where precision equals recall, per-tag best-F1 thresholds (with a fallback to the
global one below `min_support` positives), and the same metrics sliced by tag frequency rank
and by category.
"""

from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP per column; NaN where a column has no positive."""
    order = np.argsort(-scores, axis=0, kind="stable")
    hits = np.take_along_axis(targets, order, axis=0).astype(np.float64)
    positives = hits.sum(axis=0)
    precision = np.cumsum(hits, axis=0) / np.arange(1, len(hits) + 1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision * hits).sum(axis=0) / positives
    ap[positives == 0] = np.nan
    return ap


def f1_at(scores: np.ndarray, targets: np.ndarray, threshold) -> dict:
    """Micro and macro precision/recall/F1 at one threshold (a scalar or one per tag)."""
    pred = scores >= threshold
    t = targets.astype(bool)
    tp = (pred & t).sum(axis=0).astype(np.float64)
    fp = (pred & ~t).sum(axis=0).astype(np.float64)
    fn = (~pred & t).sum(axis=0).astype(np.float64)
    micro_p = tp.sum() / max(tp.sum() + fp.sum(), 1)
    micro_r = tp.sum() / max(tp.sum() + fn.sum(), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_tag = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    has_pos = t.any(axis=0)
    return {"micro_f1": _f1(micro_p, micro_r), "micro_precision": micro_p,
            "micro_recall": micro_r,
            "macro_f1": float(np.nanmean(per_tag[has_pos])) if has_pos.any() else 0.0}


def _f1(p: float, r: float) -> float:
    return float(2 * p * r / (p + r)) if p + r > 0 else 0.0


def pr_equal_threshold(scores: np.ndarray, targets: np.ndarray) -> float:
    """The global threshold where micro precision and recall are closest (SW's "P=R")."""
    grid = np.linspace(0.01, 0.99, 99)
    best, gap = 0.5, np.inf
    for th in grid:
        m = f1_at(scores, targets, th)
        if m["micro_precision"] == 0 and m["micro_recall"] == 0:
            continue
        d = abs(m["micro_precision"] - m["micro_recall"])
        if d < gap:
            best, gap = float(th), d
    return best


def best_thresholds(scores: np.ndarray, targets: np.ndarray, fallback: float,
                    min_support: int = 5) -> np.ndarray:
    """Per-tag threshold maximising F1; tags with fewer positives get `fallback`."""
    # Not below 0.1: for a tag the model has not learned, "everything" maximises F1.
    grid = np.linspace(0.1, 0.9, 41)
    t = targets.astype(bool)
    best_f1 = np.full(scores.shape[1], -1.0)
    best = np.full(scores.shape[1], fallback)
    for th in grid:
        pred = scores >= th
        tp = (pred & t).sum(axis=0)
        f1 = 2 * tp / np.maximum(pred.sum(axis=0) + t.sum(axis=0), 1)
        better = f1 > best_f1
        best[better], best_f1[better] = th, f1[better]
    best[t.sum(axis=0) < min_support] = fallback
    return best


def evaluate(scores: np.ndarray, targets: np.ndarray, categories: np.ndarray | None = None,
             counts: np.ndarray | None = None, threshold: float = 0.4,
             min_support: int = 5) -> dict:
    """Every metric of the eval report; `counts` orders tags by frequency for the slices."""
    ap = average_precision(scores, targets)
    pr = pr_equal_threshold(scores, targets)
    per_tag = best_thresholds(scores, targets, pr, min_support)
    out = {"mAP": _nanmean(ap), "threshold": threshold, "pr_threshold": pr,
           **_prefixed(f1_at(scores, targets, threshold), "at_threshold_"),
           **_prefixed(f1_at(scores, targets, pr), "at_pr_"),
           **_prefixed(f1_at(scores, targets, per_tag), "per_tag_"),
           "tags_with_positives": int(np.isfinite(ap).sum()), "samples": int(len(scores))}
    slices = {}
    if counts is not None:
        rank = np.argsort(-counts, kind="stable")
        for name, idx in (("top100", rank[:100]), ("top1000", rank[:1000]),
                          ("rest", rank[1000:])):
            if len(idx):
                slices[name] = _slice(scores, targets, ap, idx, threshold)
    if categories is not None:
        for cat in np.unique(categories):
            slices[f"category_{int(cat)}"] = _slice(scores, targets, ap,
                                                    np.flatnonzero(categories == cat), threshold)
    out["slices"] = slices
    out["per_tag"] = {"ap": ap.tolist(), "threshold": per_tag.tolist()}
    return out


def _slice(scores, targets, ap, idx, threshold) -> dict:
    m = f1_at(scores[:, idx], targets[:, idx], threshold)
    return {"tags": int(len(idx)), "mAP": _nanmean(ap[idx]), "micro_f1": m["micro_f1"],
            "macro_f1": m["macro_f1"]}


def _nanmean(a: np.ndarray) -> float:
    return float(np.nanmean(a)) if np.isfinite(a).any() else 0.0


def _prefixed(d: dict, prefix: str) -> dict:
    return {prefix + k: float(v) for k, v in d.items()}
