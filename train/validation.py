"""One evaluation of the model on the validation split, on every rank.

    model + val loader -> loop.predict_split (each rank's share: scores, targets, loss)
                       -> NaN check on every rank -> rows gathered on rank 0
                       -> metrics.score (rank 0) -> the report, broadcast to every rank

`train/run.py` asks for a report after each epoch (or every `--eval-every` steps) and at the
end; the checkpoint saver decides whether it is the best.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from . import distributed
from .errors import TrainError
from .loop import StepState, predict_split
from .metrics import score

log = logging.getLogger(__name__)


class Validator:
    """Evaluates the model on `loader()`'s batches and scores them against `tags`."""

    def __init__(self, *, loader: Callable[[], object], loss_fn: nn.Module,
                 device: torch.device, task: str, precision: str, channels_last: bool,
                 tags: list[dict], threshold: float, min_support: int, lr: float):
        self.loader = loader
        self.loss_fn = loss_fn
        self.device = device
        self.task = task
        self.precision = precision
        self.channels_last = channels_last
        self.tags = tags
        self.threshold = threshold
        self.min_support = min_support
        self.lr = lr                                  # named in the divergence message
        self._last: tuple[int, dict] = (-1, {})       # (step, report) of the latest one

    def report_at(self, state: StepState, model: nn.Module) -> tuple[dict, bool]:
        """The evaluation report of `model` at `state.step` on every rank, and whether it is
        new: a second call at the same step (the run's end after an epoch's) reuses the
        first one's report. A NaN score on any rank stops the run on every rank (TrainError
        naming the step)."""
        if self._last[0] == state.step:
            return dict(self._last[1]), False
        distributed.broadcast_buffers(model)
        sc, tg, loss_sum, n = predict_split(model, self.loader(), self.loss_fn, self.device,
                                            task=self.task, precision=self.precision,
                                            channels_last=self.channels_last)
        loss_sum, n, nans, size = distributed.total(
            [loss_sum, n, float(torch.isnan(sc).sum()), float(sc.numel())], self.device)
        if nans:
            raise TrainError(
                f"the model diverged by step {state.step} (epoch {state.epoch}): "
                f"{int(nans)} of {int(size)} validation scores are NaN; lower --lr (now "
                f"{self.lr:g}) or lengthen --warmup-steps, and start afresh")
        sc = distributed.gather_rows(sc, self.device)
        tg = distributed.gather_rows(tg, self.device)
        report: dict = {}
        if distributed.is_main() and sc is not None and len(sc):
            multilabel = self.task == "multilabel"
            categories = np.array([t["category"] for t in self.tags])
            counts = np.array([t["count"] for t in self.tags], dtype=np.float64)
            report = score(sc, tg, categories=categories if multilabel else None,
                           counts=counts if multilabel else None, threshold=self.threshold,
                           min_support=self.min_support)
            report["val_loss"] = loss_sum / max(n, 1)
        report = distributed.broadcast(report)
        self._last = (state.step, dict(report))
        return report, True
