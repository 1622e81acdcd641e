"""Evaluation at scale: `train.metrics.score` on 50,000 images x 5,000 tags.

    .venv/bin/python bench/eval.py [--images 50000] [--tags 5000] [--baseline-images 10000]
                                   [--baseline-tags 1000]

Times the evaluation and measures its peak memory beyond the input matrices (tracemalloc,
which numpy reports its buffers to). Then, on a smaller matrix that the earlier
implementation (float64 copies of the whole matrix, one pass per threshold; read from git
commit d543893) can hold, runs both and checks every number agrees to 1e-6 (scores without
ties: ties are where the two differ on purpose, sklearn's rule).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import tracemalloc
import types
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402

from train import metrics  # noqa: E402

BASELINE_COMMIT = "d543893"


def inputs(n: int, tags: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distinct scores per column (a permutation of n levels) and targets with Zipf-like
    prevalence, as float32 scores and uint8 targets (what a run gathers)."""
    rng = np.random.default_rng(seed)
    prevalence = np.clip(0.3 / np.arange(1, tags + 1) ** 0.7, 2 / n, None)
    targets = (rng.random((n, tags), dtype=np.float32) < prevalence).astype(np.uint8)
    noise = rng.random((n, tags), dtype=np.float32) + targets * np.float32(0.5)
    scores = (np.argsort(np.argsort(noise, axis=0), axis=0).astype(np.float32) / n)
    return scores, targets


def measure(fn, *args) -> tuple[dict, float, float]:
    tracemalloc.start()
    start = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak / 2 ** 30


def baseline_module():
    text = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:train/metrics.py"],
                          capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parent).stdout
    module = types.ModuleType("baseline_metrics")
    exec(compile(text, "baseline_metrics", "exec"), module.__dict__)
    return module


def flat(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, f"{prefix}{k}.")
        else:
            yield prefix + k, np.asarray(v, dtype=np.float64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--tags", type=int, default=5_000)
    ap.add_argument("--baseline-images", type=int, default=10_000)
    ap.add_argument("--baseline-tags", type=int, default=1_000)
    args = ap.parse_args()
    categories = np.arange(args.tags) % 5
    scores, targets = inputs(args.images, args.tags)
    counts = targets.sum(axis=0).astype(np.float64)
    size = (scores.nbytes + targets.nbytes) / 2 ** 30
    _, seconds, peak = measure(metrics.score, scores, targets, categories, counts)
    print(f"new, {args.images} x {args.tags}: {seconds:.1f} s, peak {peak:.2f} GiB beyond "
          f"the {size:.2f} GiB of inputs")
    del scores, targets
    n, tags = args.baseline_images, args.baseline_tags
    scores, targets = inputs(n, tags, seed=1)
    categories, counts = np.arange(tags) % 5, targets.sum(axis=0).astype(np.float64)
    old = baseline_module()
    a, t_old, m_old = measure(old.evaluate, scores, targets.astype(np.float32), categories,
                              counts)
    b, t_new, m_new = measure(metrics.score, scores, targets, categories, counts)
    fa, fb = dict(flat(a)), dict(flat(b))
    worst = max(float(np.nanmax(np.abs(fa[k] - fb[k]))) if fa[k].size else 0.0 for k in fa)
    print(f"baseline vs new, {n} x {tags}: {t_old:.2f} s / {t_new:.2f} s "
          f"({t_old / t_new:.1f}x), peak {m_old:.2f} / {m_new:.2f} GiB; largest difference "
          f"{worst:.1e}")
    return 0 if worst <= 1e-6 and fa.keys() == fb.keys() else 1


if __name__ == "__main__":
    sys.exit(main())
