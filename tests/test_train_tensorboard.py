"""`train --log tensorboard`: events read back with tensorboard's own reader; the settings block."""

from __future__ import annotations

import csv
import logging

import pytest
import torch
from support.train_fixtures import emulator_shards

from train.cli import main
from train.errors import TrainError
from train.tensorboard_log import Board, LossTap

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator")


def read_events(folder) -> dict[str, list]:
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def test_a_run_writes_curves_and_metrics(tmp_path, caplog):
    shards = emulator_shards(tmp_path / "shards", posts=60, size=32)
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="train.run"):
        assert main(["--shards", str(shards), "--out", str(out), "--arch", "resnet18",
                     "--weights", "none", "--image-size", "32", "--epochs", "1",
                     "--batch-size", "8", "--workers", "0", "--checkpoint-every", "0",
                     "--max-steps", "4", "--eval-every", "2", "--log-every", "2",
                     "--lr", "0.01", "--log", "tensorboard"]) == 0
    block = next(r.getMessage() for r in caplog.records if "run settings" in r.getMessage())
    for word in ("resnet18", "weights", "none", "training and", "per epoch", "batch",
                 "precision", "fp32", "device", "cpu"):
        assert word in block
    events = read_events(out / "tensorboard")
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["step"] for r in rows] == ["2", "4"]             # --eval-every 2
    # the evaluations in TensorBoard are the rows of metrics.csv, the source of truth
    for key in ("mAP", "val_loss", "micro_f1", "macro_f1"):
        got = events[f"metrics/{key}"]
        assert [e.step for e in got] == [int(r["step"]) for r in rows]
        assert [e.value for e in got] == pytest.approx([float(r[key]) for r in rows])
    assert {"slices/top100/mAP", "slices/category_0/micro_f1"} <= set(events)
    steps = int(rows[-1]["step"])
    assert [e.step for e in events["train/loss"]] == list(range(2, steps + 1, 2))
    assert all(e.value > 0 for e in events["train/loss"])
    lr = [e.value for e in events["train/lr"]]
    assert 0 < max(lr) <= 0.01 + 1e-9 and len(set(lr)) > 1     # the schedule moves it
    assert all(e.value > 0 for e in events["train/images_per_s"])


def test_the_loss_tap_counts_training_losses_only():
    tap = LossTap(torch.nn.BCEWithLogitsLoss())
    x, y = torch.zeros(2, 3, requires_grad=True), torch.ones(2, 3)
    tap(x, y)
    tap(x + 1, y)
    with torch.no_grad():
        tap(x - 5, y)                                          # an evaluation pass
    want = (torch.nn.functional.binary_cross_entropy_with_logits(x, y)
            + torch.nn.functional.binary_cross_entropy_with_logits(x + 1, y)) / 2
    assert tap.take() == pytest.approx(float(want.detach()))
    assert tap.take() is None


def test_board_off_writes_nothing(tmp_path):
    board = Board(tmp_path, "none")
    loss = torch.nn.MSELoss()
    assert board.tap(loss) is loss
    board.step(20, 100, None)
    board.record(1, {"mAP": 0.5}, {})
    board.close()
    assert not (tmp_path / "tensorboard").exists()
    with pytest.raises(TrainError, match="tensorboard"):
        Board(tmp_path, "wandb")
