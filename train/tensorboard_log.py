"""What a run tells the people watching it: the settings block at the start, TensorBoard events.

    train --stream --shards shards/ --out run/ --log tensorboard
    tensorboard --logdir run/tensorboard

`settings_block()` is the one block of effective settings logged when a run starts (model,
weights, data size, steps per epoch, batch, precision, device), so a log says what was run.
`Board` writes, with `--log tensorboard`, the training curves (loss, learning rate, images/s
every `log_every` steps) and every evaluation (the metrics.csv row, the report's scalars and
each slice's mAP and F1) as TensorBoard events in run/tensorboard/, through the `tensorboard`
package's writer (torch.utils.tensorboard). run/metrics.csv stays the source of truth.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn

from .errors import TrainError

log = logging.getLogger(__name__)
LOG_CHOICES = ("none", "tensorboard")
BOARD_DIR = "tensorboard"


def settings_block(s, *, task: str, outputs: int, params: int, train_samples: int,
                   val_samples: int, steps_per_epoch: int, total_steps: int, precision: str,
                   device: torch.device, world: int) -> str:
    """The effective settings of a run as a few aligned lines (`s`: TrainSettings)."""
    effective = s.batch_size * s.grad_accum * world
    init = f", init from {s.init_from}" if s.init_from else ""
    frozen = ", backbone frozen" if s.freeze_backbone else ""
    rows = [
        ("model", f"{s.model} ({params / 1e6:.1f} M parameters), {s.head} head, {task}, "
                  f"{outputs} outputs"),
        ("weights", f"{s.weights}{init}{frozen}"),
        ("data", f"{train_samples} training and {val_samples} validation samples, "
                 f"{s.image_size} px, from {s.shards}"),
        ("steps", f"{steps_per_epoch} per epoch x {s.epochs} epochs = {total_steps}"
                  + (f" (stopping at {s.max_steps})" if s.max_steps else "")),
        ("batch", f"{s.batch_size} x {s.grad_accum} accumulation x {world} ranks = {effective}"
                  f"; {s.workers} workers"),
        ("optimiser", f"{s.optimizer}, lr {s.lr:g}, weight decay {s.weight_decay:g}, "
                      f"{s.loss} loss"),
        ("precision", precision),
        ("device", f"{device}" + (", channels last" if s.channels_last and
                                  device.type == "cuda" else "")
                   + (", compiled" if s.compile else "")),
        ("outputs", f"{s.out}" + (" (resuming)" if s.resume else "")),
    ]
    return "run settings:\n" + "\n".join(f"  {k:<10} {v}" for k, v in rows)


class LossTap(nn.Module):
    """A loss function that also sums the training losses it computes (with grad enabled,
    so evaluation passes are not counted) for the board, without a device sync."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.total: torch.Tensor | None = None
        self.count = 0

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = self.inner(logits, targets)
        if torch.is_grad_enabled():
            value = loss.detach().float()
            self.total = value if self.total is None else self.total + value
            self.count += 1
        return loss

    def take(self) -> float | None:
        """Mean of the losses since the last call, or None when there were none."""
        if not self.count:
            return None
        mean = float(self.total) / self.count
        self.total, self.count = None, 0
        return mean


class Board:
    """TensorBoard events of one run with `log` "tensorboard"; nothing at all with "none".
    Raises TrainError for another `log` value or without the tensorboard package."""

    def __init__(self, out: Path, log: str = "none", every: int = 20):
        self.writer = None
        self.every = max(1, every)
        self.tapped: LossTap | None = None
        self._last = (time.perf_counter(), 0)
        if log not in LOG_CHOICES:
            raise TrainError(f"log = {log!r}: choose from {', '.join(LOG_CHOICES)}")
        if log == "none":
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise TrainError("--log tensorboard needs the tensorboard package: "
                             "pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(Path(out) / BOARD_DIR))

    def tap(self, loss_fn: nn.Module) -> nn.Module:
        """`loss_fn`, watched for the training-loss curve when the board is on."""
        if self.writer is None:
            return loss_fn
        self.tapped = LossTap(loss_fn)
        return self.tapped

    def step(self, step: int, images: int, optimizer) -> None:
        """After an optimizer step: every `every` steps, loss, learning rate and images/s."""
        if self.writer is None or step % self.every:
            return
        now = time.perf_counter()
        seconds, seen = now - self._last[0], images - self._last[1]
        self._last = (now, images)
        loss = self.tapped.take() if self.tapped is not None else None
        if loss is not None:
            self.writer.add_scalar("train/loss", loss, step)
        for i, group in enumerate(optimizer.param_groups):
            self.writer.add_scalar("train/lr" if i == 0 else f"train/lr_group{i}",
                                   group["lr"], step)
        if seconds > 0:
            self.writer.add_scalar("train/images_per_s", seen / seconds, step)

    def record(self, step: int, row: dict, report: dict) -> None:
        """One evaluation: the metrics.csv row, the report's scalars and each slice."""
        if self.writer is None:
            return
        for key, value in row.items():
            if key not in ("step",) and _number(value):
                self.writer.add_scalar(f"metrics/{key}", float(value), step)
        for key, value in report.items():
            if _number(value) and key not in row:
                self.writer.add_scalar(f"eval/{key}", float(value), step)
        for name, metrics in (report.get("slices") or {}).items():
            for key, value in metrics.items():
                if key != "tags" and _number(value):
                    self.writer.add_scalar(f"slices/{name}/{key}", float(value), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
