"""train/records.py: metrics.csv written, read back as series (the one reader the plot and the
report share), and cut back to a checkpoint's step on resume. References: hand-written files
and csv's own reader."""

from __future__ import annotations

import csv

from train.loop import StepState
from train.records import COLUMNS, MetricsLog, drop_rows_after, read_metrics, series
from train.report import cli as report_cli
from train.tensorboard_log import Board

CSV = ("step,epoch,images,train_loss,val_loss,mAP,micro_f1,macro_f1,images_per_s,data_wait\n"
       "2,0,32,,0.7,0.25,0.5,0.4,,\n"
       "4,1,64,0.69,0.6,0.5,0.6,0.5,100.0,0.1\n"
       "6,1,96,,0.5,,0.7,0.6,,\n")


def test_series_are_the_rows_with_a_value(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(CSV)
    rows = read_metrics(path)
    assert series(rows, "train_loss") == ([4], [0.69])
    assert series(rows, "mAP") == ([2, 4], [0.25, 0.5])
    assert series(rows, "val_loss") == ([2, 4, 6], [0.7, 0.6, 0.5])
    assert read_metrics(tmp_path / "missing.csv") == []


def test_the_report_draws_the_points_of_the_file(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(CSV)
    svg = report_cli._curves(path)
    # one polyline per column with values; mAP has two points, train_loss one
    assert svg.count('data-series="mAP"') == 1
    start = svg.index('data-series="mAP"')
    points = svg[start:svg.index("/>", start)].split('points="')[1].rstrip('"').split()
    assert len(points) == 2


def test_rows_are_appended_under_one_header_and_cut_back_to_a_step(tmp_path):
    log = MetricsLog(tmp_path, Board(tmp_path))
    report = {"val_loss": 0.5, "mAP": 0.25, "at_threshold_micro_f1": 0.5,
              "at_threshold_macro_f1": 0.4}
    for step in (2, 4, 6):
        log.append(StepState(step=step, epoch=step // 4, images=16 * step), report,
                   {"train_loss": 0.7} if step == 4 else {})
    with (tmp_path / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(COLUMNS)
    assert [r["step"] for r in rows] == ["2", "4", "6"]
    assert [r["train_loss"] for r in rows] == ["", "0.7", ""]
    assert rows[1]["mAP"] == "0.25" and rows[1]["micro_f1"] == "0.5"
    before = (tmp_path / "metrics.csv").read_text().splitlines()
    drop_rows_after(tmp_path / "metrics.csv", 4)
    assert (tmp_path / "metrics.csv").read_text().splitlines() == before[:3]
    drop_rows_after(tmp_path / "metrics.csv", 4)             # nothing after it: unchanged
    assert (tmp_path / "metrics.csv").read_text().splitlines() == before[:3]
