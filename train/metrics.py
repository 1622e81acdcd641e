"""Multi-label evaluation: scores (n, T) in [0, 1], targets (n, T) in {0, 1}.

macro mAP (average precision per tag with at least one positive, as sklearn's
average_precision_score: tied scores are one threshold, so row order never matters), micro and
macro F1 at a fixed threshold and at the global threshold where precision equals recall,
per-tag best-F1 thresholds (with a fallback to the global one below `min_support` positives),
and the same metrics sliced by tag frequency rank and by category.

The P=R and per-tag thresholds are chosen on all of the validation rows (they are what `tag`
uses), so F1 scored on those same rows is tuned on them and overstates what a new picture gets
(on pure noise it beats any blind guess). `score` therefore reports F1 at tuned thresholds
twice, under labelled keys: `*_crossfit_*`, thresholds chosen on the even rows and scored on the
odd ones and the other way round (counts pooled over both halves), an honest estimate; and
`*_tuned_on_val_*`, chosen and scored on all rows, an optimistic one. NaN scores (a diverged
model) raise ScoresError: no ranking of them means anything.

One pass over `CHUNK` tags at a time sorts each tag's scores once (as int64 keys that carry the
target in their lowest bit: numpy's SIMD sort, about ten times an argsort's speed); average
precision and the counts at every threshold then come from the sorted keys by binary search.
50,000 images x 5,000 tags take 28 s and 0.8 GiB beyond the two input matrices (bench/eval.py).
"""

from __future__ import annotations

import numpy as np

from .errors import ScoresError

CHUNK = 128
PR_GRID = np.linspace(0.01, 0.99, 99)
# Not below 0.1: for a tag the model has not learned, "everything" maximises F1.
F1_GRID = np.linspace(0.1, 0.9, 41)


def _inputs(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    """float32 scores and bool targets; raises ScoresError for NaN scores."""
    scores = scores.numpy() if hasattr(scores, "numpy") else np.asarray(scores)
    targets = targets.numpy() if hasattr(targets, "numpy") else np.asarray(targets)
    scores = scores.astype(np.float32, copy=False)
    nans = int(np.isnan(scores).sum())
    if nans:
        raise ScoresError(f"{nans} of {scores.size} scores are NaN: the model diverged; no "
                          "metric can rank them")
    return scores, targets.astype(bool, copy=False)


def _order_keys(values: np.ndarray) -> np.ndarray:
    """float32 -> int64 in [0, 2**32) with the same order (-0.0 counts as 0.0)."""
    bits = (np.asarray(values, np.float32) + np.float32(0)).view(np.int32).astype(np.int64)
    return np.where(bits < 0, -bits - 1 - 2 ** 31, bits) + 2 ** 31


def _at_least(threshold) -> np.ndarray:
    """The smallest float32 >= each float64 threshold: `score >= t` in float64 (numpy's
    promotion of a float32 score) is `score >= _at_least(t)` in float32."""
    t = np.asarray(threshold, np.float64)
    low = t.astype(np.float32)
    return np.where(low < t, np.nextafter(low, np.float32(np.inf)), low).astype(np.float32)


class _Sorted:
    """One chunk of tags, each row one tag's scores in ascending order, the target in bit 0."""

    def __init__(self, scores: np.ndarray, targets: np.ndarray):
        keys = _order_keys(scores.T) << 1
        keys |= targets.T
        keys.sort(axis=1)
        self.n = keys.shape[1]
        self.rows = np.arange(keys.shape[0])
        self.values = keys >> 1
        self.hits_below = np.cumsum(keys & 1, axis=1, dtype=np.int64)  # [:, i]: in 0..i
        self.positives = self.hits_below[:, -1].copy()

    def average_precision(self) -> np.ndarray:
        """Each run of tied scores is one threshold: the positives in it times the precision
        at its end (its lowest rank), over all positives."""
        values, n = self.values, self.n
        first = np.ones(values.shape, bool)
        first[:, 1:] = values[:, 1:] != values[:, :-1]
        at = np.flatnonzero(first)
        row, pos = np.divmod(at, n)
        below = np.where(pos > 0, self.hits_below.ravel()[at - 1], 0)
        tp = self.positives[row] - below                    # positives scoring >= the run
        nxt = np.append(tp[1:], 0)
        nxt[np.append(row[1:] != row[:-1], True)] = 0       # a row's top run ends the row
        contribution = (tp - nxt) * (tp / (n - pos))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.positives > 0, np.bincount(row, contribution, len(self.rows))
                            / self.positives, np.nan)

    def counts(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted, tp), each (K, rows): scores >= each float32 threshold ((K,) or
        (K, rows)) and positives among them."""
        limits = np.broadcast_to(_order_keys(thresholds).reshape(len(thresholds), -1),
                                 (len(thresholds), len(self.rows)))
        offset = self.rows * 2 ** 33                          # rows apart in one flat order
        flat = (self.values + offset[:, None]).ravel()
        below = np.searchsorted(flat, limits + offset) - self.rows * self.n
        hits = np.where(below > 0, self.hits_below[self.rows, np.maximum(below - 1, 0)], 0)
        return (self.n - below).astype(np.float64), (self.positives - hits).astype(np.float64)


def _pass(scores, targets, thresholds: np.ndarray | None = None):
    """(AP, predicted, tp, positives) over every tag, in chunks; `thresholds` are float32, (K,)
    or (K, T); predicted and tp are (K, T)."""
    scores, targets = _inputs(scores, targets)
    n, tags = scores.shape
    k = 0 if thresholds is None else len(thresholds)
    ap, positives = np.full(tags, np.nan), np.zeros(tags)
    predicted, tp = np.zeros((k, tags)), np.zeros((k, tags))
    for start in range(0, tags if n else 0, CHUNK):          # no rows: no AP, no counts
        cols = slice(start, min(tags, start + CHUNK))
        chunk = _Sorted(scores[:, cols], targets[:, cols])
        ap[cols], positives[cols] = chunk.average_precision(), chunk.positives
        if k:
            limits = thresholds if np.ndim(thresholds) == 1 else thresholds[:, cols]
            predicted[:, cols], tp[:, cols] = chunk.counts(limits)
    return ap, predicted, tp, positives


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AP per column; NaN where a column has no positive. A run of tied scores counts as one
    threshold: every positive in it gets the precision at the run's end (as sklearn)."""
    return _pass(scores, targets)[0]


def _float32_threshold(threshold) -> np.ndarray:
    """A scalar compares in float32 like the scores (a score shown as 0.4 passes 0.4), an array
    in float64 (numpy's own promotion, kept so the numbers stay those of earlier runs)."""
    if np.ndim(threshold) == 0:
        return np.float32(threshold)
    return _at_least(threshold)


def confusion(scores: np.ndarray, targets: np.ndarray, threshold) -> tuple[np.ndarray, ...]:
    """(tp, fp, fn) per tag at one threshold (a scalar or one per tag), as float64."""
    _, predicted, tp, positives = _pass(scores, targets, _float32_threshold(threshold)[None])
    return tp[0], predicted[0] - tp[0], positives - tp[0]


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
    """(predicted, tp), each (len(grid), T): how many scores are >= each grid value (compared
    in float64), and how many of those are positives."""
    _, predicted, tp, _ = _pass(scores, targets, _at_least(grid))
    return predicted, tp


def pr_equal_threshold(scores: np.ndarray, targets: np.ndarray, counts=None) -> float:
    """The global threshold where micro precision and recall are closest (SW's "P=R").
    `counts`: (predicted, tp, positives) at PR_GRID, when already counted."""
    predicted, tp, positives = counts or _pass(scores, targets, _at_least(PR_GRID))[1:]
    positives = positives.sum()
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
    """Per-tag threshold maximising F1; tags with fewer positives get `fallback`.
    `counts`: (predicted, tp, positives) at F1_GRID, when already counted."""
    predicted, tp, positives = counts or _pass(scores, targets, _at_least(F1_GRID))[1:]
    best_f1 = np.full(len(positives), -1.0)
    best = np.full(len(positives), fallback)
    for th, pred, hit in zip(F1_GRID, predicted, tp, strict=True):
        f1 = 2 * hit / np.maximum(pred + positives, 1)
        better = f1 > best_f1
        best[better], best_f1[better] = th, f1[better]
    best[positives < min_support] = fallback
    return best


def score(scores: np.ndarray, targets: np.ndarray, categories: np.ndarray | None = None,
          counts: np.ndarray | None = None, threshold: float = 0.4,
          min_support: int = 5) -> dict:
    """Every metric of the eval report; `counts` orders tags by frequency for the slices.
    `pr_threshold` and `per_tag.threshold` are chosen on every row; F1 at them is reported
    cross-fitted (`at_pr_crossfit_*`, `per_tag_crossfit_*`) and tuned on validation
    (`at_pr_tuned_on_val_*`, `per_tag_tuned_on_val_*`); see the module docstring.
    One sorting pass over all rows and one over the even rows (the odd rows' counts are the
    difference): every threshold the report can use is counted in them (the grid compared
    in float64 for the per-tag thresholds; in float32, the fixed threshold and each P=R
    candidate, which are scalars). Raises ScoresError for NaN scores."""
    scores, targets = _inputs(scores, targets)
    grid = np.unique(np.concatenate([PR_GRID, F1_GRID]))
    limits = np.concatenate([_at_least(grid), np.float32(PR_GRID), [np.float32(threshold)]])
    ap, predicted, tp, positives = _pass(scores, targets, limits)
    tuning = _Tuning(grid, min_support)
    everything = (predicted, tp, positives)
    even = _pass(scores[::2], targets[::2], limits)[1:]
    odd = tuple(a - b for a, b in zip(everything, even, strict=True))
    pr, per_tag = tuning.choose(everything)
    at_threshold = _at(everything, len(limits) - 1)
    chosen_on_even, chosen_on_odd = tuning.rows(*tuning.choose(even)), \
        tuning.rows(*tuning.choose(odd))
    crossfit = [_plus(_at(odd, e), _at(even, o))
                for e, o in zip(chosen_on_even, chosen_on_odd, strict=True)]
    tuned = [_at(everything, row) for row in tuning.rows(pr, per_tag)]
    out = {"mAP": _nanmean(ap), "threshold": threshold, "pr_threshold": pr,
           **_prefixed(_f1_from(*at_threshold), "at_threshold_"),
           **_prefixed(_f1_from(*crossfit[0]), "at_pr_crossfit_"),
           **_prefixed(_f1_from(*crossfit[1]), "per_tag_crossfit_"),
           **_prefixed(_f1_from(*tuned[0]), "at_pr_tuned_on_val_"),
           **_prefixed(_f1_from(*tuned[1]), "per_tag_tuned_on_val_"),
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


class _Tuning:
    """Threshold choice from the counts of `score`'s single pass: rows [0, len(grid)) are
    the grid compared in float64, the next len(PR_GRID) rows PR_GRID compared in float32."""

    def __init__(self, grid: np.ndarray, min_support: int):
        self.grid, self.min_support = grid, min_support
        self.pr_rows, self.f1_rows = np.searchsorted(grid, PR_GRID), np.searchsorted(grid, F1_GRID)

    def choose(self, counts: tuple[np.ndarray, ...]) -> tuple[float, np.ndarray]:
        """(P=R threshold, per-tag thresholds) chosen on these (predicted, tp, positives)."""
        predicted, tp, positives = counts
        pr = pr_equal_threshold(None, None, (predicted[self.pr_rows], tp[self.pr_rows],
                                             positives))
        per_tag = best_thresholds(None, None, pr, self.min_support,
                                  (predicted[self.f1_rows], tp[self.f1_rows], positives))
        return pr, per_tag

    def rows(self, pr: float, per_tag: np.ndarray) -> tuple[int, np.ndarray]:
        """The count rows that score them: P=R in float32, as a scalar threshold compares."""
        return len(self.grid) + int(np.searchsorted(PR_GRID, pr)), \
            np.searchsorted(self.grid, per_tag)


def _at(counts: tuple[np.ndarray, ...], row) -> tuple[np.ndarray, ...]:
    """(tp, fp, fn) per tag at `row` of (predicted, tp, positives) (one row, or one per tag)."""
    predicted, tp, positives = counts
    cols = np.arange(len(positives))
    hit, pred = tp[row, cols], predicted[row, cols]
    return hit, pred - hit, positives - hit


def _plus(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _slice(at_threshold: tuple[np.ndarray, ...], ap: np.ndarray, idx: np.ndarray) -> dict:
    m = _f1_from(*(a[idx] for a in at_threshold))
    return {"tags": int(len(idx)), "tags_with_positives": int(np.isfinite(ap[idx]).sum()),
            "mAP": _nanmean(ap[idx]), "micro_f1": m["micro_f1"], "macro_f1": m["macro_f1"]}


def _nanmean(a: np.ndarray) -> float:
    return float(np.nanmean(a)) if np.isfinite(a).any() else 0.0


def _prefixed(d: dict, prefix: str) -> dict:
    return {prefix + k: float(v) for k, v in d.items()}
