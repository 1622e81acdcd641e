"""The epoch driver: epochs of `train_one_epoch` until the plan's end or `--max-steps`.

    StepState + StepPlan -> each epoch's loader (from the step position) -> train_one_epoch
    after every optimizer step (`on_step`): the board's curves; every `--eval-every` steps
        the evaluation and its metrics row; every `--checkpoint-every` steps the checkpoint
    after every epoch: the evaluation and its row (without `--eval-every`), the checkpoint

What an evaluation, a row and a checkpoint are is not its business: `train/run.py` hands it
`validate`, `record` and `save`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import distributed
from .data import ShardStream
from .loop import Loop, StepState, train_one_epoch
from .run_setup import StepPlan
from .settings import TrainSettings
from .tensorboard_log import Board

log = logging.getLogger(__name__)


@dataclass
class EpochHooks:
    """What the driver calls: a (competing) evaluation's report, a metrics row from a
    report and an epoch's stats, and a checkpoint."""

    validate: Callable[[], dict]
    record: Callable[[dict, dict], None]
    save: Callable[[], None]


class EpochDriver:
    """Drives `state` through the epochs of `plan` over `train`'s loaders."""

    def __init__(self, s: TrainSettings, *, state: StepState, plan: StepPlan,
                 train: ShardStream, loader: Callable[[int, int], DataLoader],
                 forward_model: nn.Module, optimizer: torch.optim.Optimizer, board: Board,
                 device: torch.device, hooks: EpochHooks):
        self.s = s
        self.state = state
        self.plan = plan
        self.train = train
        self.loader = loader                  # (epoch, micro-batches to skip) -> loader
        self.forward_model = forward_model
        self.optimizer = optimizer
        self.board = board
        self.device = device
        self.hooks = hooks

    def on_step(self) -> bool:
        """After an optimizer step: curves, scheduled evaluation and checkpoint; True when
        the run stops here."""
        s, state = self.s, self.state
        if s.head_warmup_steps and state.step == s.head_warmup_steps:
            log.info("step %d: head warm-up done, the backbone trains too", state.step)
        self.board.step(state.step, state.images, self.optimizer)
        if s.eval_every and state.step % s.eval_every == 0:
            self.hooks.record(self.hooks.validate(), {})
        if s.checkpoint_every and state.step % s.checkpoint_every == 0:
            self.hooks.save()               # after the evaluation: it holds this step's best
        return state.step >= self.plan.stop_at

    def run(self, loop: Loop) -> None:
        """Epochs until the last one or `--max-steps`; per-epoch evaluation and checkpoint.
        `loop.on_step` is called after each optimizer step (normally `self.on_step`)."""
        s, state, plan = self.s, self.state, self.plan
        while state.step < plan.stop_at and state.epoch < s.epochs:
            loader = self.loader(state.epoch, state.batches_in_epoch)
            stats = train_one_epoch(self.forward_model, loader, state, loop)
            stats["train_loss"] = distributed.mean(stats["train_loss"], self.device)
            errors = int(self.train.errors.sum())
            if errors:
                log.warning("%d unreadable shards or samples skipped so far", errors)
            if state.step >= plan.stop_at and state.batches_in_epoch < plan.per_epoch:
                break
            state.epoch += 1
            state.batches_in_epoch = 0
            state.epoch_loss = 0.0
            if not s.eval_every:
                self.hooks.record(self.hooks.validate(), stats)
            self.hooks.save()               # after the evaluation: it holds this step's best
