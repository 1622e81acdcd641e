"""Setting up a training run: what `Run` trains with, built from `TrainSettings`.

    TrainSettings -> device, manifest, tags.csv rows and task     (read_run_manifest, read_run_tags)
                  -> head priors from the train split's label_ids (head_priors)
                  -> the model, placed and wrapped                (build_run_model -> Placed)
                  -> the data streams and their loaders           (build_streams, make_loader)
                  -> the step plan                                (plan_steps -> StepPlan)
                  -> optimiser, schedule, EMA, GradScaler         (build_trainables -> Trainables)

`train/run.py` composes these; `train/checkpoint_saver.py` saves and restores the
`Trainables` (the resume state); `train/epochs.py` drives the epochs over the loaders.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from shards.errors import ManifestError, ShardsError
from shards.labels import label_counts
from shards.manifest import pattern_manifest, read_manifest, split_of
from shards.tags import read_tags

from . import distributed
from .backbones.stacked import is_stacked
from .data import DeviceDecoder, ShardStream, Targets, encoded_collate, transforms
from .errors import TrainError
from .init_from import init_from
from .models import build_model, prior_bias
from .normalization import Normalization, recorded_in
from .optim import make_optimizer, make_schedule
from .settings import TrainSettings
from .wd_folder import WdFolder
from .wd_init import build_from_wd

log = logging.getLogger(__name__)

TASKS = ("multilabel", "multiclass", "binary")


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`--device` as a torch device (`auto`: this rank's GPU, else the CPU); TrainError for
    CUDA on a machine without it."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda: no CUDA device is available")
    return torch.device(name)


def read_run_manifest(s: TrainSettings) -> dict:
    """The shards' manifest; for a brace pattern of tar URLs, one listing them with the
    samples of each, counted on rank 0 (from each shard's stats, or by reading it)."""
    if "{" not in s.shards and not s.shards.endswith(".tar"):
        return read_manifest(s.shards, s.allow_incomplete)
    if not s.tags:
        raise TrainError("a shard pattern such as 'https://host/ds/train/{00000..00099}.tar'"
                         " needs --tags (tags.csv path or URL)")
    manifest = pattern_manifest(s.shards, s.epoch_samples) if distributed.is_main() else None
    return distributed.broadcast(manifest)


def read_run_tags(s: TrainSettings, out: Path, manifest: dict) -> tuple[list[dict], str]:
    """The label space (the run's own tags.csv when resuming, else `--tags` or the shards')
    and the task (`--task`, else the manifest's, else multilabel)."""
    run_tags = out / "tags.csv"
    if s.resume and run_tags.exists():
        tags = read_tags(run_tags)
    else:
        tags = read_tags(s.tags or f"{s.shards.rstrip('/')}/tags.csv")
    task = s.task or manifest.get("task") or "multilabel"
    if task not in TASKS:
        raise TrainError(f"unknown task {task!r}")
    return tags, task


def shard_rows(s: TrainSettings, names: list[str]) -> list[str]:
    """The names of the rows the shards' `label_ids` index: the shards' own tags.csv (the
    run's label space may be another: `--tags`, or a head grown by `--init-from`), or
    `names` for a brace pattern of tar URLs (whose `--tags` is the shards' index)."""
    try:
        return [t["name"] for t in read_tags(f"{s.shards.rstrip('/')}/tags.csv")]
    except ShardsError:
        return list(names)


def head_priors(s: TrainSettings, task: str, tags: list[dict], manifest: dict,
                carried: list[str] | None = None) -> torch.Tensor | None:
    """Each tag's share of the training samples, counted from the `label_ids` of the train
    split's parquet files (tags.csv counts may come from a far bigger population), for a
    multi-label head whose bias starts at the base rates; None when not wanted, or (with
    a warning) when the shards hold no labels to count. The `carried` tags (rows copied from
    a tagger afterwards) are not warned about when the shards lack them."""
    if task != "multilabel" or s.head_bias == "default":
        return None
    if s.head_bias != "prior":
        raise TrainError(f"unknown head bias {s.head_bias!r} (prior or default)")
    names = [t["name"] for t in tags]
    own = shard_rows(s, names)
    try:
        positives, samples = label_counts(split_of(s.shards, manifest, "train").urls, len(own))
    except ShardsError as exc:
        log.warning("--head-bias prior: %s; the head starts at PyTorch's default bias", exc)
        return None
    if not samples:
        return None
    row = {name: i for i, name in enumerate(own)}
    missing = [n for n in names if n not in row and n not in set(carried or ())]
    if missing:
        log.warning("--head-bias prior: %d tags of the run are not in the shards' index "
                    "(%s): they start at the lowest base rate", len(missing),
                    ", ".join(missing[:5]))
    counts = [float(positives[row[n]]) if n in row else 0.0 for n in names]
    log.info("head bias: the base rates of %d tags in %d training samples", len(names), samples)
    return torch.tensor(counts, dtype=torch.float64) / samples


@dataclass
class Placed:
    """The model on its device: `model` (saved, evaluated, exported) and `forward_model`
    (the one training calls: DDP-wrapped and compiled where asked)."""

    model: nn.Module
    forward_model: nn.Module
    normalization: Normalization     # what the weights expect of their inputs
    channels_last: bool


def build_run_model(s: TrainSettings, *, outputs: int, device: torch.device, world: int,
                    local_rank: int, priors: torch.Tensor | None, wd: WdFolder | None = None,
                    names: list[str] | None = None) -> Placed:
    """The architecture and weights of `s`, its head bias at `priors`, `--init-from`'s layers,
    on `device` (channels last on CUDA), frozen, DDP-wrapped and compiled as asked. With `wd`
    (`--init-from` a WD v3 tagger folder) the folder's model, its head grown to `names`."""
    if wd is not None:
        model = build_from_wd(wd, names or [], s, priors)
    else:
        if is_stacked(s.model) and not s.freeze_backbone:
            raise TrainError(f"--arch {s.model} stacks frozen backbones: add "
                             "--freeze-backbone (a linear probe on their joined features)")
        model = build_model(s.model, outputs, weights=s.weights, head=s.head,
                            dropout=s.dropout, image_size=s.image_size,
                            partial=s.weights_partial)
    normalization = model.normalization
    if priors is not None and wd is None:
        prior_bias(model, priors)
    if s.init_from and wd is None:
        init_from(model, Path(s.init_from))
        normalization = recorded_in(Path(s.init_from)) or normalization
    channels_last = s.channels_last and device.type == "cuda"
    model = model.to(device, memory_format=torch.channels_last if channels_last
                     else torch.preserve_format)
    if s.freeze_backbone:
        model.freeze_backbone()
    forward_model = model
    if world > 1:
        forward_model = DistributedDataParallel(
            model, device_ids=[local_rank] if device.type == "cuda" else None)
    if s.compile:
        forward_model = torch.compile(forward_model)
    return Placed(model=model, forward_model=forward_model, normalization=normalization,
                  channels_last=channels_last)


@dataclass
class Streams:
    """This rank's training and validation samples; `decoder` decodes on the device."""

    train: ShardStream
    val: ShardStream | None
    decoder: DeviceDecoder | None


def build_streams(s: TrainSettings, *, manifest: dict, targets: Targets,
                  normalization: Normalization, device: torch.device, rank: int,
                  world: int) -> Streams:
    """The train split's stream (augmented, exact epochs) and the val split's (None when the
    shards have no validation samples)."""
    augment = transforms(s.image_size, True, scale=tuple(s.crop_scale),
                         trivial_augment=s.trivial_augment, normalization=normalization)
    decoder = DeviceDecoder(augment, device) if s.device_decode else None
    train = ShardStream(split_of(s.shards, manifest, "train"), targets,
                        None if s.device_decode else augment, seed=s.seed,
                        shuffle_buffer=s.shuffle_buffer, open_shards=s.open_shards,
                        batch_size=s.batch_size, rank=rank, world=world)
    try:
        val_split = split_of(s.shards, manifest, "val")
    except ManifestError:
        val_split = None
    val = None
    if val_split is not None and val_split.urls and val_split.samples:
        val = ShardStream(val_split, targets,
                          transforms(s.image_size, False, normalization=normalization),
                          seed=s.seed, shuffle=False, exact=False, rank=rank, world=world)
    return Streams(train=train, val=val, decoder=decoder)


def make_loader(s: TrainSettings, dataset: ShardStream, *, epoch: int, train: bool,
                device: torch.device, decoder: DeviceDecoder | None,
                skip: int = 0) -> DataLoader:
    """A DataLoader over `dataset` for `epoch` (training: from micro-batch `skip` on)."""
    if train:
        dataset.set_epoch(epoch, skip, s.batch_size)
    collate = encoded_collate if train and decoder is not None else None
    return DataLoader(dataset, batch_size=s.batch_size, num_workers=s.workers,
                      drop_last=train, pin_memory=device.type == "cuda",
                      collate_fn=collate,
                      generator=torch.Generator().manual_seed(s.seed * 1000 + epoch),
                      persistent_workers=False)


@dataclass(frozen=True)
class StepPlan:
    """How long the run is: micro-batches per rank and epoch, optimizer steps."""

    per_epoch: int          # micro-batches per rank and epoch (equal on every rank)
    steps_per_epoch: int
    total: int              # the schedule's length: every epoch's steps
    stop_at: int            # where this run stops (`--max-steps`, else `total`)


def plan_steps(s: TrainSettings, train: ShardStream, world: int) -> StepPlan:
    """Batches per rank and epoch (equal on every rank by construction), steps in all."""
    workers = max(1, s.workers)
    per_epoch = workers * train.per_stream(workers, world) // s.batch_size
    steps_per_epoch = -(-per_epoch // s.grad_accum)
    total = s.epochs * steps_per_epoch
    stop_at = min(total, s.max_steps) if s.max_steps else total
    return StepPlan(per_epoch=per_epoch, steps_per_epoch=steps_per_epoch, total=total,
                    stop_at=stop_at)


@dataclass
class Trainables:
    """Everything a step changes and a checkpoint holds, besides the step position."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: AveragedModel | None
    scaler: torch.amp.GradScaler | None         # fp16 only

    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and exported: the EMA's where there is one."""
        return self.ema.module if self.ema is not None else self.model


def build_trainables(s: TrainSettings, model: nn.Module, *, total: int, precision: str,
                     device: torch.device) -> Trainables:
    """The optimiser's groups, the warm-up and cosine schedule over `total` steps, an EMA
    with `--ema`, and a GradScaler for fp16."""
    optimizer = make_optimizer(model, s.optimizer, lr=s.lr, weight_decay=s.weight_decay,
                               momentum=s.momentum, lr_backbone=s.lr_backbone,
                               layer_decay=s.layer_decay)
    scheduler = make_schedule(optimizer, total, s.warmup_steps,
                              0 if s.freeze_backbone else s.head_warmup_steps)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(s.ema)) if s.ema else None
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return Trainables(model=model, optimizer=optimizer, scheduler=scheduler, ema=ema,
                      scaler=scaler)
