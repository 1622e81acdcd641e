"""metrics.png: loss and mAP curves of a run, from metrics.csv."""

from __future__ import annotations

import csv
from pathlib import Path


def plot_metrics(csv_path: Path, png_path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open()))

    def series(key: str):
        pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in ("", None)]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "val_loss"):
        x, y = series(key)
        if x:
            left.plot(x, y, marker="o", label=key)
    left.set_xlabel("step")
    left.set_title("loss")
    for key in ("mAP", "micro_f1", "macro_f1"):
        x, y = series(key)
        if x:
            right.plot(x, y, marker="o", label=key)
    right.set_xlabel("step")
    right.set_title("validation")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
