"""Per-tag numbers of the report, from a score matrix and its targets (pure numpy).

    tag_rows(scores, targets, thresholds)  support, AP, precision/recall/F1 at each threshold
    pr_curve(scores, targets)              the precision-recall curve of one tag
    worst(scores, targets, threshold, k)   the highest-scoring false positives and the
                                           lowest-scoring false negatives of one tag
    hits(scores, targets, threshold, k)    its highest-scoring true positives
"""

from __future__ import annotations

import numpy as np

from ..metrics import average_precision


def tag_rows(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray) -> list[dict]:
    """One dict per output: support, ap (None without positives), precision, recall, f1,
    tp, fp, fn at the output's threshold (precision None when nothing is predicted)."""
    t = targets.astype(bool)
    pred = scores >= thresholds[None, :]
    tp = (pred & t).sum(axis=0)
    fp = (pred & ~t).sum(axis=0)
    fn = (~pred & t).sum(axis=0)
    ap = average_precision(scores, targets)
    rows = []
    for i in range(scores.shape[1]):
        p = tp[i] / (tp[i] + fp[i]) if tp[i] + fp[i] else None
        r = tp[i] / (tp[i] + fn[i]) if tp[i] + fn[i] else None
        f1 = 2 * tp[i] / (2 * tp[i] + fp[i] + fn[i]) if tp[i] + fp[i] + fn[i] else None
        rows.append({"support": int(t[:, i].sum()),
                     "ap": None if np.isnan(ap[i]) else float(ap[i]),
                     "threshold": float(thresholds[i]),
                     "precision": _opt(p), "recall": _opt(r), "f1": _opt(f1),
                     "tp": int(tp[i]), "fp": int(fp[i]), "fn": int(fn[i])})
    return rows


def _opt(value) -> float | None:
    return None if value is None else float(value)


def pr_curve(scores: np.ndarray, targets: np.ndarray,
             max_points: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) of one tag, one point per distinct score from the
    highest down (as sklearn's precision_recall_curve, without its final (1, 0) point),
    thinned to at most `max_points`. Empty arrays when the tag has no positive."""
    positives = int(targets.sum())
    if positives == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    s, hit = scores[order], targets[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]      # end of each run of equal scores
    tp = np.cumsum(hit)[last]
    predicted = last + 1
    precision, recall, cut = tp / predicted, tp / positives, s[last]
    if len(cut) > max_points:
        keep = np.unique(np.linspace(0, len(cut) - 1, max_points).round().astype(int))
        precision, recall, cut = precision[keep], recall[keep], cut[keep]
    return precision, recall, cut


def worst(scores: np.ndarray, targets: np.ndarray, threshold: float,
          k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the (at most) `k` highest-scoring false positives (score at or over
    `threshold`, tag absent) and the `k` lowest-scoring false negatives (under it, present)."""
    t = targets.astype(bool)
    fp = np.flatnonzero(~t & (scores >= threshold))
    fn = np.flatnonzero(t & (scores < threshold))
    fp = fp[np.argsort(-scores[fp], kind="stable")[:k]]
    fn = fn[np.argsort(scores[fn], kind="stable")[:k]]
    return fp, fn


def hits(scores: np.ndarray, targets: np.ndarray, threshold: float, k: int) -> np.ndarray:
    """Row indices of the (at most) `k` highest-scoring true positives of one tag (score at or
    over `threshold`, tag present), what the model is surest of."""
    tp = np.flatnonzero(targets.astype(bool) & (scores >= threshold))
    return tp[np.argsort(-scores[tp], kind="stable")[:k]]
