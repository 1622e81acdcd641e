"""A run interrupted anywhere and resumed is the run that was never interrupted: the same
final weights (bit for bit on CPU), the same kept model and step, the same metrics.csv rows.

The run keeps its best evaluation (`--keep best`), averages its weights (`--ema`) and
accumulates gradients over 3 micro-batches, with an epoch that ends on a leftover step of
fewer micro-batches. Interruptions are exact: a fault raised right after a given optimizer
step (its evaluation and checkpoint done), or `--max-steps N` and then `--resume`.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from support.train_fixtures import emulator_shards

from train.run import Run
from train.settings import TrainSettings

# 106 training samples, 7 batches of 16 an epoch: steps after micro-batches 3, 6 and 7 (the
# leftover step, of one micro-batch); 3 epochs, 9 steps. A small backbone at 16 px, 1 thread.
SETTINGS = dict(model="mobilenet_v3_small", weights="none", image_size=16, batch_size=16,
                workers=0,
                lr=1e-2, log_every=0, shuffle_buffer=100, epochs=3, grad_accum=3, ema=0.8,
                keep="best", eval_every=2, checkpoint_every=1)
TIMINGS = {"images_per_s", "data_wait"}        # wall-clock columns, never equal


class Crash(RuntimeError):
    """The fault: raised right after one optimizer step's evaluation and checkpoint."""


class CrashingRun(Run):
    def __init__(self, settings: TrainSettings, at_step: int):
        super().__init__(settings)
        self.at_step = at_step

    def _on_step(self) -> bool:
        stop = super()._on_step()
        if self.state.step == self.at_step:
            raise Crash(f"fault after step {self.at_step}")
        return stop


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return emulator_shards(tmp_path_factory.mktemp("shards"), posts=130, size=16)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def whole(shards, tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("whole") / "run"
    Run(_settings(shards, out)).fit()
    config = json.loads((out / "config.json").read_text())
    assert config["steps_per_epoch"] == 3 and config["total_steps"] == 9   # the layout above
    return out


def _settings(shards, out, **kw) -> TrainSettings:
    return TrainSettings(shards=str(shards), out=str(out), **{**SETTINGS, **kw})


def _rows(run) -> list[dict]:
    with (run / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(f)]


def _assert_same_run(run, whole) -> None:
    """Weights, kept model and step, evaluation and metrics rows of `run` are `whole`'s."""
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    last_a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)
    last_b = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for part in ("model", "ema"):
        assert [k for k in last_a[part] if not torch.equal(last_a[part][k], last_b[part][k])] \
            == [], part
    assert (last_b["step"], last_b["epoch"], last_b["images"]) == \
        (last_a["step"], last_a["epoch"], last_a["images"])
    report_a = json.loads((whole / "eval.json").read_text())
    report_b = json.loads((run / "eval.json").read_text())
    for key in ("kept", "kept_step", "step", "mAP", "val_loss", "at_threshold_micro_f1"):
        assert report_b[key] == report_a[key], key
    assert _rows(run) == _rows(whole)


def _best_step_before(rows: list[dict], step: int) -> int:
    """The step of the best evaluation logged up to `step` (the first of equals)."""
    scored = [(float(r["mAP"]), -int(r["step"])) for r in rows if r["mAP"]
              and int(r["step"]) <= step]
    return -max(scored)[1]


def test_the_uninterrupted_run_keeps_its_best_evaluation(whole):
    # the reference for the rest: its kept model is the best row of metrics.csv, not the last
    rows = _rows(whole)
    report = json.loads((whole / "eval.json").read_text())
    assert report["kept_step"] == _best_step_before(rows, 9)
    assert report["kept"] == "best" and report["kept_step"] < 9


def test_resumed_after_the_best_evaluation(shards, whole, tmp_path):
    # the fault comes right after the best evaluation so far (not the last step's)
    rows = _rows(whole)
    step = _best_step_before(rows, 8)
    with pytest.raises(Crash):
        CrashingRun(_settings(shards, tmp_path / "run"), step).fit()
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert saved["step"] == step and saved["best"]["step"] == step   # it knows that evaluation
    Run(_settings(shards, tmp_path / "run", resume=True)).fit()
    _assert_same_run(tmp_path / "run", whole)


def test_resumed_at_an_epochs_leftover_step(shards, whole, tmp_path):
    # the checkpoint of step 3 is the epoch's last, leftover step: its micro-batches are all
    # trained, the epoch not yet closed; the resumed run has nothing left of it to train
    with pytest.raises(Crash):
        CrashingRun(_settings(shards, tmp_path / "run"), 3).fit()
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["step"], saved["epoch"], saved["batches_in_epoch"]) == (3, 0, 7)
    Run(_settings(shards, tmp_path / "run", resume=True)).fit()
    _assert_same_run(tmp_path / "run", whole)


def test_resumed_mid_epoch_from_the_epochs_first_checkpoint(shards, whole, tmp_path):
    # checkpoints at epoch ends only: the fault at step 5 resumes from step 3, and the rows
    # written after step 3 (the evaluation of step 4) are written again, once
    with pytest.raises(Crash):
        CrashingRun(_settings(shards, tmp_path / "run", checkpoint_every=0), 5).fit()
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["step"], saved["epoch"], saved["batches_in_epoch"]) == (3, 1, 0)
    assert [r["step"] for r in _rows(tmp_path / "run")] == ["2", "4"]
    Run(_settings(shards, tmp_path / "run", resume=True)).fit()
    _assert_same_run(tmp_path / "run", whole)


def test_max_steps_then_resume_with_the_full_epochs(shards, whole, tmp_path):
    # --max-steps 5 stops mid-epoch (no scheduled evaluation there), evaluates and exports
    # its last model; resumed, the run keeps what the uninterrupted run keeps
    first = Run(_settings(shards, tmp_path / "run", max_steps=5)).fit()
    assert first["step"] == 5 and first["kept_step"] in {5, _best_step_before(_rows(whole), 4)}
    Run(_settings(shards, tmp_path / "run", resume=True)).fit()
    _assert_same_run(tmp_path / "run", whole)


def test_a_finished_run_that_kept_its_best_resumes(whole, shards, tmp_path):
    # --resume of a finished --keep best run (nothing left to train): it keeps the same model
    shutil.copytree(whole, tmp_path / "run")
    Run(_settings(shards, tmp_path / "run", resume=True)).fit()
    _assert_same_run(tmp_path / "run", whole)
    best = tmp_path / "run" / "checkpoints" / "best.safetensors"
    assert best.read_bytes() == (whole / "model.safetensors").read_bytes()
    # a run finished by the version that moved best.safetensors onto model.safetensors
    best.unlink()
    Run(_settings(shards, tmp_path / "run", resume=True)).fit()
    _assert_same_run(tmp_path / "run", whole)
    assert best.read_bytes() == (whole / "model.safetensors").read_bytes()
