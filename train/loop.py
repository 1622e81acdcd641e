"""`train_one_epoch()` and `evaluate()`: the two loops, separate, each returning its numbers.

The training loop counts optimizer steps, logs a line every `log_every` steps (loss,
images/s, the share of time spent waiting for data, ETA) and calls `on_step` after each
optimizer step, which is where the run checkpoints, evaluates, or stops.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class StepState:
    step: int = 0                 # optimizer steps taken
    epoch: int = 0
    batches_in_epoch: int = 0     # micro-batches done in the current epoch
    images: int = 0
    streams: int = 1              # ranks x workers the data position refers to
    world: int = 1                # ranks (batches_in_epoch counts one rank's batches)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_one_epoch(model: nn.Module, loader, loss_fn: nn.Module, optimizer, scheduler,
                    state: StepState, device: torch.device, precision: str = "fp32",
                    grad_accum: int = 1, total_steps: int = 0, log_every: int = 20,
                    channels_last: bool = False, ema=None,
                    on_step: Callable[[], bool] | None = None, trace=None,
                    decoder=None) -> dict:
    """One pass over `loader`. Returns mean loss, images/s and the data-wait share.
    `on_step()` returning True stops the epoch early (the run is stopping)."""
    model.train()
    start = last = time.perf_counter()
    waited = window_wait = 0.0
    losses: list[float] = []
    window: list[float] = []
    images = window_images = 0
    t_data = time.perf_counter()
    for x, y, keys in loader:
        now = time.perf_counter()
        if trace is not None:
            trace.write("".join(f"{state.step} {k}\n" for k in keys))
        waited += now - t_data
        window_wait += now - t_data
        x = decoder(x) if decoder is not None else x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            loss = loss_fn(model(x), y)
        (loss / grad_accum).backward()
        value = float(loss.detach())
        losses.append(value)
        window.append(value)
        images += len(x)
        window_images += len(x)
        state.batches_in_epoch += 1
        state.images += len(x)
        if state.batches_in_epoch % grad_accum == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            state.step += 1
            if log_every and state.step % log_every == 0:
                now = time.perf_counter()
                rate = window_images / max(now - last, 1e-9)
                eta = (total_steps - state.step) * (now - last) / log_every
                log.info("step %d/%d epoch %d  loss %.4f  %.1f img/s  data wait %.0f%%  "
                         "ETA %s", state.step, total_steps, state.epoch, float(np.mean(window)),
                         rate, 100 * window_wait / max(now - last, 1e-9), _clock(eta))
                last, window, window_images, window_wait = now, [], 0, 0.0
            if on_step is not None and on_step():
                break
        t_data = time.perf_counter()
    elapsed = time.perf_counter() - start
    return {"train_loss": float(np.mean(losses)) if losses else float("nan"),
            "images_per_s": images / max(elapsed, 1e-9),
            "data_wait": waited / max(elapsed, 1e-9)}


@torch.no_grad()
def evaluate(model: nn.Module, loader, loss_fn: nn.Module, device: torch.device,
             task: str, precision: str = "fp32",
             channels_last: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Scores, targets and mean loss over a loader (sigmoid for multi-label and binary,
    softmax for multiclass)."""
    model.eval()
    scores, targets, losses = [], [], []
    for x, y, _ in loader:
        x, y = x.to(device), y.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = model(x).float()
        losses.append(float(loss_fn(logits, y)))
        probs = torch.softmax(logits, 1) if task == "multiclass" else torch.sigmoid(logits)
        scores.append(probs.cpu().numpy())
        targets.append(y.cpu().numpy())
    if not scores:
        return np.zeros((0, 0)), np.zeros((0, 0)), float("nan")
    return np.concatenate(scores), np.concatenate(targets), float(np.mean(losses))


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
