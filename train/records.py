"""A run's records: run/metrics.csv (one row per evaluation or epoch), eval.json, metrics.png.

    Run (StepState, evaluation report, epoch stats) -> MetricsLog.append -> metrics.csv row
                                                                         -> Board.record
    Run, resuming at a checkpoint's step -> drop_rows_after (the rows a crash left past it)
    metrics.csv -> read_metrics -> series -> plot_metrics (metrics.png)
                                          -> report's curves (train/report/cli.py)
    Run's last report (the kept model's) -> write_eval -> eval.json; then plot_run

The one reader of metrics.csv is `read_metrics`; `series` turns its rows into the (steps,
values) of one column.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from shards.atomic import write_bytes_atomic, write_json_atomic

if TYPE_CHECKING:
    from .loop import StepState
    from .tensorboard_log import Board

log = logging.getLogger(__name__)

METRICS_CSV = "metrics.csv"
EVAL_JSON = "eval.json"
METRICS_PNG = "metrics.png"
COLUMNS = ("step", "epoch", "images", "train_loss", "val_loss", "mAP", "micro_f1", "macro_f1",
           "images_per_s", "data_wait")


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.csv (strings, "" where a row has no value); [] when the file is
    missing or unreadable."""
    try:
        with Path(path).open(newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """The steps and values of the rows that have a `key` value."""
    points = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in ("", None)]
    return [p[0] for p in points], [p[1] for p in points]


class MetricsLog:
    """Appends the rows of run/metrics.csv (rank 0) and shows each to the board and the log."""

    def __init__(self, out: Path, board: Board):
        self.path = out / METRICS_CSV
        self.board = board

    def append(self, state: StepState, report: dict, stats: dict) -> None:
        """One row: the step position, the epoch's `stats` (train loss, speed) and the
        evaluation `report` (empty without a validation split or between evaluations)."""
        values = (state.step, state.epoch, state.images, stats.get("train_loss", ""),
                  report.get("val_loss", ""), report.get("mAP", ""),
                  report.get("at_threshold_micro_f1", ""),
                  report.get("at_threshold_macro_f1", ""), stats.get("images_per_s", ""),
                  stats.get("data_wait", ""))
        row = dict(zip(COLUMNS, values, strict=True))
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.board.record(state.step, row, report)
        if report:
            log.info("eval at step %d: mAP %.4f  micro-F1 %.4f  macro-F1 %.4f", state.step,
                     report["mAP"], report["at_threshold_micro_f1"],
                     report["at_threshold_macro_f1"])


def drop_rows_after(path: Path, step: int) -> None:
    """Drop the metrics.csv rows of steps after the checkpoint's `step` (written before a
    crash that came ahead of the next checkpoint); the resumed run writes them again."""
    rows = read_metrics(path)
    kept = [r for r in rows if int(r["step"]) <= step]
    if len(kept) == len(rows) or not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(kept)
    write_bytes_atomic(path, buffer.getvalue().encode())
    log.info("metrics.csv: dropped %d rows after step %d, the checkpoint's",
             len(rows) - len(kept), step)


def write_eval(out: Path, final: dict) -> None:
    """eval.json: the kept model's report, with the run's keys."""
    write_json_atomic(out / EVAL_JSON, final)


def plot_run(out: Path) -> None:
    """metrics.png from metrics.csv (nothing without rows)."""
    if (out / METRICS_CSV).exists():
        plot_metrics(out / METRICS_CSV, out / METRICS_PNG)


def plot_metrics(csv_path: Path, png_path: Path) -> None:
    """Draw the loss curves (left) and the validation curves (right) of `csv_path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(csv_path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train_loss", "val_loss"):
        x, y = series(rows, key)
        if x:
            left.plot(x, y, marker="o", label=key)
    left.set_xlabel("step")
    left.set_title("loss")
    for key in ("mAP", "micro_f1", "macro_f1"):
        x, y = series(rows, key)
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
