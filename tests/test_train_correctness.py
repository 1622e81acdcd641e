"""What a run trains on and in which mode, checked against the definition: the training mode
at every step, leftover micro-batches, the kept model, EMA weights for --init-from, precision."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from support.train_fixtures import emulator_shards

import train.run_setup as run_module
from train import checkpoint
from train.init_from import init_from
from train.loop import Loop, StepState, train_one_epoch
from train.models import build_model
from train.precision import resolve_precision
from train.run import Run
from train.settings import TrainSettings

BASE = dict(model="resnet18", weights="none", image_size=32, batch_size=32, workers=0,
            lr=2e-3, log_every=0, shuffle_buffer=100, checkpoint_every=0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return emulator_shards(tmp_path_factory.mktemp("shards"), posts=300, size=32)


@pytest.fixture(scope="module")
def evaluated_run(shards, tmp_path_factory):
    """One run, shared: evaluations every 2 steps, 3 micro-batches a step, a forward hook
    that notes, for every forward pass that builds a graph (training steps), the submodules
    that are not in training mode."""
    modes: list[list[str]] = []
    build = run_module.build_model

    def not_training(model, _):
        if torch.is_grad_enabled():
            modes.append([name for name, m in model.named_modules() if not m.training])

    def build_and_hook(*args, **kw):
        model = build(*args, **kw)
        model.register_forward_pre_hook(not_training)
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
    # every submodule (BatchNorm, Dropout, ...), at every micro-batch of the 2 epochs
    out, _, modes = evaluated_run
    trained = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["images"]
    assert len(modes) == trained // 32
    assert [names for names in modes if names] == []


def test_leftover_micro_batches_make_a_step_at_the_epoch_end(evaluated_run, shards):
    out, report, _ = evaluated_run
    train = json.loads((shards / "manifest.json").read_text())["splits"]["train"]["successes"]
    batches = -(-train // 32)                        # every sample, padded to whole batches
    config = json.loads((out / "config.json").read_text())
    assert batches % 3                               # so micro-batches are left over
    assert config["steps_per_epoch"] == -(-batches // 3)
    assert report["step"] == 2 * config["steps_per_epoch"] == config["total_steps"]


def test_the_best_evaluated_model_is_kept(evaluated_run):
    # the kept model is the evaluation of metrics.csv with the highest mAP (the first of
    # equals); its row's numbers are eval.json's (test_train_resume compares the weights
    # with a second run stopped at that step)
    out, report, _ = evaluated_run
    rows = [r for r in csv.DictReader((out / "metrics.csv").open()) if r["mAP"]]
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    best = max(rows, key=lambda r: (float(r["mAP"]), -int(r["step"])))
    eval_json = json.loads((out / "eval.json").read_text())
    assert eval_json["kept_step"] == int(best["step"])
    assert eval_json["kept"] == ("last" if best["step"] == "6" else "best")
    assert eval_json["mAP"] == float(best["mAP"]) and eval_json["val_loss"] == float(
        best["val_loss"])
    assert eval_json["step"] == report["step"] == 6


def _shifted(model, by: float):
    """A copy of `model` with every floating-point tensor moved by `by`."""
    import copy
    other = copy.deepcopy(model)
    with torch.no_grad():
        for t in other.state_dict().values():
            if t.is_floating_point():
                t.add_(by)
    return other


def test_init_from_a_run_takes_the_model_it_kept(tmp_path, caplog):
    # a finished run: its last checkpoint (raw +0, EMA +1) is not what it kept, the best
    # evaluated EMA weights of step 4 (+2) in model.safetensors
    from safetensors.torch import load_file, save_file
    model = build_model("resnet18", 3, weights="none")
    ema = torch.optim.swa_utils.AveragedModel(_shifted(model, 1.0))
    checkpoint.save(tmp_path / "checkpoints" / "last.pt",
                    {"model": model.state_dict(), "ema": ema.state_dict(), "step": 9})
    save_file({k: v.contiguous() for k, v in _shifted(model, 2.0).state_dict().items()},
              str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"ema": 0.9, "model": "resnet18"}))
    (tmp_path / "eval.json").write_text(json.dumps({"kept": "best", "kept_step": 4}))
    fresh = build_model("resnet18", 3, weights="none")
    with caplog.at_level("INFO", logger="train.init_from"):
        init_from(fresh, tmp_path)
    kept = load_file(str(tmp_path / "model.safetensors"))
    assert [k for k, v in fresh.state_dict().items() if not torch.equal(v, kept[k])] == []
    assert "the best evaluated model, step 4 (EMA weights)" in caplog.text
    assert "model.safetensors" in caplog.text


def test_init_from_an_unfinished_run_takes_its_last_ema_weights(tmp_path):
    model = build_model("resnet18", 3, weights="none")
    ema = torch.optim.swa_utils.AveragedModel(model)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(1.0)
    checkpoint.save(tmp_path / "checkpoints" / "last.pt",
                    {"model": model.state_dict(), "ema": ema.state_dict()})
    fresh = build_model("resnet18", 3, weights="none")
    init_from(fresh, tmp_path)
    assert torch.equal(fresh.features[0].weight, ema.module.features[0].weight)


@pytest.mark.parametrize(("capability", "expected"), [
    ((7, 0), "fp16"), ((7, 5), "fp16"),                 # V100, T4: bf16 only emulated
    ((8, 0), "bf16"), ((8, 6), "bf16"), ((8, 9), "bf16"), ((9, 0), "bf16"),  # A100 ... H100
])
def test_auto_precision_picks_bf16_only_on_native_bf16(monkeypatch, capability, expected):
    # the GPU is stubbed at the device level (NVIDIA's compute capability table)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", torch.device("cuda")) == expected
    assert resolve_precision("auto", torch.device("cuda", 0)) == expected


def test_precision_on_cpu_and_as_asked():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("fp16", torch.device("cuda")) == "fp16"


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
