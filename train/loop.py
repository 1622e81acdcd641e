"""`train_one_epoch()` and `predict_split()`: the two loops, separate, each returning its numbers.

The training loop counts optimizer steps, logs a line every `log_every` steps (loss,
images/s, the share of time spent waiting for data, ETA) and calls `on_step` after each
optimizer step, which is where the run checkpoints, evaluates, or stops. Micro-batches left
over at the epoch's end (fewer than `grad_accum`) make one last, smaller step. Under DDP only
the last micro-batch of a step all-reduces (the others run in `no_sync()`); the leftover
micro-batches of an epoch are averaged over the ranks before their step.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import distributed

log = logging.getLogger(__name__)


@dataclass
class StepState:
    step: int = 0                 # optimizer steps taken
    epoch: int = 0
    batches_in_epoch: int = 0     # micro-batches done in the current epoch
    epoch_loss: float = 0.0       # their summed loss (the epoch's mean survives a resume)
    images: int = 0
    streams: int = 1              # ranks x workers the data position refers to
    world: int = 1                # ranks (batches_in_epoch counts one rank's batches)


@dataclass
class Loop:
    """What one training epoch needs besides the model and the data."""

    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    precision: str = "fp32"                   # fp32 | bf16 | fp16 (with `scaler`)
    grad_accum: int = 1
    total_steps: int = 0
    log_every: int = 20
    channels_last: bool = False
    ema: Any = None
    scaler: Any = None                        # torch.amp.GradScaler for fp16
    on_step: Callable[[], bool] | None = None
    trace: Any = None                         # a file for `step key` lines
    decoder: Any = None                       # DeviceDecoder for encoded batches


def autocast(device: torch.device, precision: str):
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


def train_one_epoch(model: nn.Module, loader, state: StepState, loop: Loop) -> dict:
    """One pass over `loader`. Returns the epoch's mean loss (over the batches before a
    resume too), images/s and the data-wait share. `loop.on_step()` returning True stops the
    epoch early (the run is stopping)."""
    model.train()
    start = time.perf_counter()
    progress = _Progress(start)
    pending = 0                                # micro-batches since the last optimizer step
    images = 0
    t_data = time.perf_counter()
    stopped = False
    for x, y, keys in loader:
        progress.waited(time.perf_counter() - t_data)
        if loop.trace is not None:
            loop.trace.write("".join(f"{state.step} {k}\n" for k in keys))
        synced = (state.batches_in_epoch + 1) % loop.grad_accum == 0
        with _accumulating(model, synced):
            value = _forward_backward(model, x, y, loop)
        pending += 1
        state.epoch_loss += value
        images += len(y)
        state.batches_in_epoch += 1
        state.images += len(y)
        progress.add(value, len(y))
        if state.batches_in_epoch % loop.grad_accum == 0:
            _optimizer_step(model, state, loop)
            pending = 0
            progress.log(state, loop)
            if loop.on_step is not None and loop.on_step():
                stopped = True
                break
        t_data = time.perf_counter()
    # A resume at the epoch's last, leftover step finds its step already taken: no gradients.
    if pending and not stopped:
        if hasattr(model, "no_sync"):          # their backward passes ran in no_sync()
            distributed.average_gradients(model)
        for p in model.parameters():           # the mean over the micro-batches there were
            if p.grad is not None:
                p.grad.mul_(loop.grad_accum / pending)
        _optimizer_step(model, state, loop)
        if loop.on_step is not None:
            loop.on_step()
    elapsed = time.perf_counter() - start
    done = state.batches_in_epoch
    return {"train_loss": state.epoch_loss / done if done else float("nan"),
            "images_per_s": images / max(elapsed, 1e-9),
            "data_wait": progress.total_wait / max(elapsed, 1e-9)}


def _accumulating(model: nn.Module, synced: bool):
    """DDP's `no_sync()` for a micro-batch whose gradients wait for the step's last one (the
    all-reduce then carries their sum); nothing for a plain module or a syncing micro-batch."""
    no_sync = getattr(model, "no_sync", None)
    return no_sync() if no_sync is not None and not synced else contextlib.nullcontext()


def _forward_backward(model: nn.Module, x, y: torch.Tensor, loop: Loop) -> float:
    x = loop.decoder(x) if loop.decoder is not None else x.to(loop.device, non_blocking=True)
    y = y.to(loop.device, non_blocking=True)
    if loop.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(loop.device, loop.precision):
        loss = loop.loss_fn(model(x), y)
    scaled = loss / loop.grad_accum
    (loop.scaler.scale(scaled) if loop.scaler is not None else scaled).backward()
    return float(loss.detach())


def _optimizer_step(model: nn.Module, state: StepState, loop: Loop) -> None:
    if loop.scaler is not None:
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
    else:
        loop.optimizer.step()
    loop.optimizer.zero_grad(set_to_none=True)
    loop.scheduler.step()
    if loop.ema is not None:
        loop.ema.update_parameters(model)
    state.step += 1


class _Progress:
    """The log line's window: loss, images/s, data wait and ETA since the last line."""

    def __init__(self, now: float):
        self.last, self.losses, self.images, self.wait, self.total_wait = now, [], 0, 0.0, 0.0

    def waited(self, seconds: float) -> None:
        self.wait += seconds
        self.total_wait += seconds

    def add(self, loss: float, images: int) -> None:
        self.losses.append(loss)
        self.images += images

    def log(self, state: StepState, loop: Loop) -> None:
        if not loop.log_every or state.step % loop.log_every:
            return
        now = time.perf_counter()
        span = max(now - self.last, 1e-9)
        eta = (loop.total_steps - state.step) * span / loop.log_every
        log.info("step %d/%d epoch %d  loss %.4f  %.1f img/s  data wait %.0f%%  ETA %s",
                 state.step, loop.total_steps, state.epoch, float(np.mean(self.losses)),
                 self.images / span, 100 * self.wait / span, _clock(eta))
        self.last, self.losses, self.images, self.wait = now, [], 0, 0.0


@torch.no_grad()
def predict_split(model: nn.Module, loader, loss_fn: nn.Module, device: torch.device, *,
                  task: str, precision: str = "fp32",
                  channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Scores (float32), targets (uint8), summed loss and sample count over a loader (sigmoid
    for multi-label and binary, softmax for multiclass). The model's mode is restored after."""
    was_training = model.training
    model.eval()
    scores, targets, loss_sum, n = [], [], 0.0, 0
    try:
        for x, y, _ in loader:
            x, y = x.to(device), y.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                logits = model(x).float()
            loss_sum += float(loss_fn(logits, y)) * len(y)
            n += len(y)
            probs = torch.softmax(logits, 1) if task == "multiclass" else torch.sigmoid(logits)
            scores.append(probs.cpu())
            targets.append(y.cpu().to(torch.uint8))
    finally:
        model.train(was_training)
    if not scores:
        return torch.zeros((0, 0)), torch.zeros((0, 0), dtype=torch.uint8), 0.0, 0
    return torch.cat(scores), torch.cat(targets), loss_sum, n


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
