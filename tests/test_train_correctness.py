"""What a run trains on and in which mode, checked against the definition: the training mode
at every step, leftover micro-batches, the kept model, EMA weights for --init-from, precision."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from train_fixtures import emulator_shards

import train.run as run_module
from train import checkpoint
from train.loop import Loop, StepState, train_one_epoch
from train.models import build_model
from train.run import Run, resolve_precision
from train.settings import TrainSettings

BASE = dict(model="resnet18", weights="none", image_size=32, batch_size=32, workers=0,
            lr=2e-3, log_every=0, shuffle_buffer=100, checkpoint_every=0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return emulator_shards(tmp_path_factory.mktemp("shards"), posts=300, size=32)


@pytest.fixture(scope="module")
def evaluated_run(shards, tmp_path_factory):
    """One run, shared: evaluations every 2 steps, 3 micro-batches a step, a forward hook
    that notes the mode of every forward pass that builds a graph (training steps)."""
    modes: list[bool] = []
    build = run_module.build_model

    def build_and_hook(*args, **kw):
        model = build(*args, **kw)
        model.register_forward_pre_hook(
            lambda m, _: modes.append(m.training) if torch.is_grad_enabled() else None)
        return model

    out = tmp_path_factory.mktemp("run") / "run"
    run_module.build_model = build_and_hook
    try:
        report = Run(TrainSettings(shards=str(shards), out=str(out), epochs=2, grad_accum=3,
                                   eval_every=2, **BASE)).fit()
    finally:
        run_module.build_model = build
    return out, report, modes


def test_every_training_step_runs_in_training_mode(evaluated_run):
    _, _, modes = evaluated_run
    assert modes and all(modes)


def test_leftover_micro_batches_make_a_step_at_the_epoch_end(evaluated_run, shards):
    out, report, _ = evaluated_run
    train = json.loads((shards / "manifest.json").read_text())["splits"]["train"]["successes"]
    batches = -(-train // 32)                        # every sample, padded to whole batches
    config = json.loads((out / "config.json").read_text())
    assert batches % 3                               # so micro-batches are left over
    assert config["steps_per_epoch"] == -(-batches // 3)
    assert report["step"] == 2 * config["steps_per_epoch"] == config["total_steps"]


def test_the_best_evaluated_model_is_kept(evaluated_run):
    out, report, _ = evaluated_run
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    best = max(float(r["mAP"]) for r in rows if r["mAP"])
    assert report["mAP"] >= best and report["kept"] in {"best", "last"}
    eval_json = json.loads((out / "eval.json").read_text())
    assert eval_json["kept"] == report["kept"] and eval_json["mAP"] == report["mAP"]


def test_init_from_takes_the_ema_weights(tmp_path):
    model = build_model("resnet18", 3, weights="none")
    ema = torch.optim.swa_utils.AveragedModel(model)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(1.0)
    checkpoint.save(tmp_path / "checkpoints" / "last.pt",
                    {"model": model.state_dict(), "ema": ema.state_dict()})
    fresh = build_model("resnet18", 3, weights="none")
    run = Run(TrainSettings(shards="", out=str(tmp_path / "new"), **BASE))
    run._init_from(fresh, tmp_path)
    assert torch.equal(fresh.features[0].weight, ema.module.features[0].weight)


def test_auto_precision_picks_bf16_only_where_supported():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_precision("auto", cuda, lambda: True) == "bf16"
    assert resolve_precision("auto", cuda, lambda: False) == "fp16"
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"


def test_fp16_steps_through_a_grad_scaler():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    before = model.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    batches = [(torch.randn(8, 4), torch.randint(0, 2, (8, 2)).float(), ["k"] * 8)] * 3
    state = StepState()
    train_one_epoch(model, batches, state, Loop(torch.nn.BCEWithLogitsLoss(), optimizer,
                                               scheduler, torch.device("cpu"), "fp16",
                                               scaler=scaler, log_every=0))
    assert state.step == 3 and scaler.get_scale() > 0
    assert torch.isfinite(model.weight).all() and not torch.equal(model.weight, before)
