"""A training run: shards in, `run/` out (DESIGN.md boundary 4).

    run/config.json  run/tags.csv  run/checkpoints/last.pt  run/metrics.csv  run/metrics.png
    run/eval.json    run/model.safetensors

`Run.fit()` builds the data streams, model and optimiser from `TrainSettings`, restores the
last checkpoint with `resume`, trains epoch by epoch, evaluates, checkpoints and exports.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from shards.manifest import pattern_manifest, read_manifest
from shards.tags import read_tags, write_tags

from . import checkpoint, distributed
from .data import (
    DeviceDecoder,
    ShardStream,
    Targets,
    encoded_collate,
    split_of,
    transforms,
)
from .errors import DataError, TrainError
from .loop import StepState, evaluate, train_one_epoch
from .losses import make_loss
from .metrics import evaluate as score
from .models import build_model, transfer
from .optim import make_optimizer, make_schedule
from .settings import TrainSettings
from .tensorboard_log import Board, settings_block

log = logging.getLogger(__name__)


class Run:
    def __init__(self, settings: TrainSettings):
        self.s = settings
        self.out = Path(settings.out)
        self.ckpt = self.out / "checkpoints" / "last.pt"

    # -- setup ----------------------------------------------------------------------------
    def _device(self, local_rank: int = 0) -> torch.device:
        name = self.s.device
        if name == "auto":
            name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise TrainError("--device cuda: no CUDA device is available")
        return torch.device(name)

    def _manifest(self) -> dict:
        """The shards' manifest; for a brace pattern of tar URLs, one made from the flags."""
        s = self.s
        if "{" not in s.shards and not s.shards.endswith(".tar"):
            return read_manifest(s.shards)
        if not s.tags or not s.epoch_samples:
            raise TrainError("a shard pattern such as 'https://host/ds/train/{00000..00099}.tar'"
                             " needs --tags (tags.csv path or URL) and --epoch-samples")
        return pattern_manifest(s.shards, s.epoch_samples)

    def _tags(self, manifest: dict) -> tuple[list[dict], str]:
        run_tags = self.out / "tags.csv"
        if self.s.resume and run_tags.exists():
            tags = read_tags(run_tags)
        else:
            tags = read_tags(self.s.tags or f"{self.s.shards.rstrip('/')}/tags.csv")
        task = self.s.task or manifest.get("task") or "multilabel"
        if task not in {"multilabel", "multiclass", "binary"}:
            raise TrainError(f"unknown task {task!r}")
        return tags, task

    def _loaders(self, manifest: dict, targets: Targets):
        s = self.s
        augment = transforms(s.image_size, True, tuple(s.crop_scale), s.trivial_augment)
        self.decoder = DeviceDecoder(augment, self.device) if s.device_decode else None
        train = ShardStream(split_of(s.shards, manifest, "train"), targets,
                            None if s.device_decode else augment, seed=s.seed,
                            shuffle_buffer=s.shuffle_buffer, open_shards=s.open_shards)
        try:
            val_split = split_of(s.shards, manifest, "val")
        except DataError:
            val_split = None
        val = None
        if val_split is not None and val_split.urls and val_split.samples:
            val = ShardStream(val_split, targets, transforms(s.image_size, False), seed=s.seed,
                              shuffle=False, exact=False)
        return train, val

    def _loader(self, dataset, epoch: int, train: bool, skip: int = 0) -> DataLoader:
        s = self.s
        if train:
            dataset.set_epoch(epoch, skip, s.batch_size)
        collate = encoded_collate if train and self.decoder is not None else None
        return DataLoader(dataset, batch_size=s.batch_size, num_workers=s.workers,
                          drop_last=train, pin_memory=self.device.type == "cuda",
                          collate_fn=collate,
                          generator=torch.Generator().manual_seed(s.seed * 1000 + epoch),
                          persistent_workers=False)

    # -- the run --------------------------------------------------------------------------
    def fit(self) -> dict:
        try:
            return self._fit()
        finally:
            distributed.teardown()

    def _fit(self) -> dict:
        s = self.s
        rank, world, local = distributed.setup()
        self.device = self._device(local)
        manifest = self._manifest()
        tags, task = self._tags(manifest)
        names = [t["name"] for t in tags]
        targets = Targets(names, task, s.positive)
        if task == "binary" and targets.positive not in names:
            raise TrainError(f"--positive {targets.positive!r} is not a tag of the shards")
        precision = s.precision if s.precision != "auto" else (
            "bf16" if self.device.type == "cuda" else "fp32")
        torch.manual_seed(s.seed)
        np.random.seed(s.seed)
        model = build_model(s.model, targets.size, s.weights, s.head, s.dropout)
        if s.init_from:
            self._init_from(model, Path(s.init_from))
        channels_last = s.channels_last and self.device.type == "cuda"
        model = model.to(self.device, memory_format=torch.channels_last if channels_last
                         else torch.preserve_format)
        if s.freeze_backbone:
            model.features.requires_grad_(False)
        train_ds, val_ds = self._loaders(manifest, targets)
        streams = max(1, s.workers)
        per_epoch = streams * (train_ds.per_stream(streams) // s.batch_size)
        if per_epoch == 0:
            raise DataError(f"{train_ds.split.samples} training samples are fewer than one "
                            f"batch of {s.batch_size} per worker and rank; lower --batch-size "
                            "or --workers")
        total = s.epochs * per_epoch // s.grad_accum
        optimizer = make_optimizer(model, s.optimizer, s.lr, s.weight_decay, s.momentum)
        scheduler = make_schedule(optimizer, total, s.warmup_steps,
                                  0 if s.freeze_backbone else s.head_warmup_steps)
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(s.ema)) if s.ema else None
        state = StepState(streams=world * streams, world=world)
        if s.resume and self.ckpt.exists():
            self._restore(model, optimizer, scheduler, ema, state)
        elif s.resume:
            log.warning("--resume: no checkpoint in %s, starting afresh", self.ckpt.parent)
        if distributed.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            write_tags(self.out / "tags.csv", tags)
            (self.out / "config.json").write_text(json.dumps(
                {**s.to_dict(), "task": task, "precision": precision, "device": str(self.device),
                 "preparation": manifest.get("image"),  # how `tag` makes pictures (one picture)
                 "world_size": world, "steps_per_epoch": per_epoch // s.grad_accum,
                 "total_steps": total}, indent=2))
        if distributed.is_main():
            log.info("%s", settings_block(
                s, task, targets.size, sum(p.numel() for p in model.parameters()),
                train_ds.split.samples, val_ds.split.samples if val_ds else 0,
                per_epoch // s.grad_accum, total, precision, self.device, world))
        self.board = Board(self.out, s.log if distributed.is_main() else "none", s.log_every)
        loss_fn = self.board.tap(make_loss(task, s.loss))
        forward_model = model
        if world > 1:
            forward_model = DistributedDataParallel(
                model, device_ids=[local] if self.device.type == "cuda" else None)
        if s.compile:
            forward_model = torch.compile(forward_model)
        categories = np.array([t["category"] for t in tags])
        counts = np.array([t["count"] for t in tags], dtype=np.float64)
        stop_at = min(total, s.max_steps) if s.max_steps else total
        trace = self._trace_file(rank)

        def validate() -> dict:
            if val_ds is None:
                return {}
            eval_model = ema.module if ema is not None else model
            sc, tg, vloss = evaluate(eval_model, self._loader(val_ds, 0, False), loss_fn,
                                     self.device, task, precision, channels_last)
            sc, tg = distributed.gather_rows(sc), distributed.gather_rows(tg)
            vloss = distributed.mean(vloss if vloss == vloss else 0.0, self.device)
            if not len(sc):
                return {}
            report = score(sc, tg, categories if task == "multilabel" else None,
                           counts if task == "multilabel" else None, s.threshold,
                           s.min_support)
            report["val_loss"] = vloss
            return report

        def on_step() -> bool:
            if s.head_warmup_steps and state.step == s.head_warmup_steps:
                log.info("step %d: head warm-up done, the backbone trains too", state.step)
            self.board.step(state.step, state.images, optimizer)
            if s.checkpoint_every and state.step % s.checkpoint_every == 0:
                self._save(model, optimizer, scheduler, ema, state)
            if s.eval_every and state.step % s.eval_every == 0:
                self._record(state, validate(), {})
            return state.step >= stop_at

        while state.step < stop_at and state.epoch < s.epochs:
            skip = state.batches_in_epoch
            loader = self._loader(train_ds, state.epoch, True, skip)
            stats = train_one_epoch(forward_model, loader, loss_fn, optimizer, scheduler,
                                    state, self.device, precision, s.grad_accum, total,
                                    s.log_every if distributed.is_main() else 0,
                                    channels_last, ema, on_step, trace, self.decoder)
            stats["train_loss"] = distributed.mean(stats["train_loss"], self.device)
            errors = int(train_ds.errors.sum())
            if errors:
                log.warning("%d unreadable shards or samples skipped so far", errors)
            if state.step >= stop_at and state.batches_in_epoch < per_epoch:
                break
            state.epoch += 1
            state.batches_in_epoch = 0
            self._save(model, optimizer, scheduler, ema, state)
            if not s.eval_every:
                self._record(state, validate(), stats)
        self._save(model, optimizer, scheduler, ema, state)
        final = validate()
        final.update({"step": state.step, "epoch": state.epoch, "task": task,
                      "world_size": world, "skipped_samples": int(train_ds.errors.sum())})
        if distributed.is_main():
            (self.out / "eval.json").write_text(json.dumps(final, indent=2))
            self._export(ema.module if ema is not None else model)
            self._plot()
        self.board.close()
        if trace is not None:
            trace.close()
        return final

    def _trace_file(self, rank: int):
        """With BOORU_TAGGER_TRACE=1 in the environment (a debugging aid), each rank lists
        the sample keys it trained on in run/samples-rank<r>.txt as `step key` lines."""
        if os.environ.get("BOORU_TAGGER_TRACE") != "1" and not self.s.extra.get("trace"):
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        return (self.out / f"samples-rank{rank}.txt").open("a")

    # -- checkpoints, metrics, export -----------------------------------------------------
    def _save(self, model, optimizer, scheduler, ema, state: StepState) -> None:
        if not distributed.is_main():
            return
        checkpoint.save(self.ckpt, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "step": state.step, "epoch": state.epoch, "batches_in_epoch": state.batches_in_epoch,
            "images": state.images, "streams": state.streams, "world": state.world,
            "rng": checkpoint.rng_state()})

    def _restore(self, model, optimizer, scheduler, ema, state: StepState) -> None:
        saved = checkpoint.load(self.ckpt)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if ema is not None and saved.get("ema"):
            ema.load_state_dict(saved["ema"])
        state.step, state.epoch = saved["step"], saved["epoch"]
        state.batches_in_epoch, state.images = saved["batches_in_epoch"], saved["images"]
        if saved.get("streams", state.streams) != state.streams:
            # Another world size or worker count: the epoch goes on from the same share of
            # its samples, in a new order (exact continuation needs the same layout).
            world_before = saved.get("world", 1)
            state.batches_in_epoch = state.batches_in_epoch * world_before // state.world
            log.warning("resuming with %d ranks x workers instead of %d: the rest of epoch %d "
                        "is read in a different order", state.streams, saved["streams"],
                        state.epoch)
        checkpoint.set_rng_state(saved["rng"])
        log.info("resumed from %s at step %d (epoch %d, batch %d)", self.ckpt, state.step,
                 state.epoch, state.batches_in_epoch)

    def _init_from(self, model, source: Path) -> None:
        path = source / "checkpoints" / "last.pt" if source.is_dir() else source
        if not path.exists() and source.is_dir():
            path = source / "model.safetensors"
        if not path.exists():
            raise TrainError(f"--init-from {source}: no checkpoint or model.safetensors there")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = checkpoint.load(path)["model"]
        loaded, skipped = transfer(model, state)
        if not loaded:
            raise TrainError(f"--init-from {source}: no layer fits this model")
        log.info("init from %s: %d tensors loaded, %d skipped (%s)", path, len(loaded),
                 len(skipped), ", ".join(skipped[:4]))

    def _record(self, state: StepState, report: dict, stats: dict) -> None:
        if not distributed.is_main():
            return
        row = {"step": state.step, "epoch": state.epoch, "images": state.images,
               "train_loss": stats.get("train_loss", ""), "val_loss": report.get("val_loss", ""),
               "mAP": report.get("mAP", ""),
               "micro_f1": report.get("at_threshold_micro_f1", ""),
               "macro_f1": report.get("at_threshold_macro_f1", ""),
               "images_per_s": stats.get("images_per_s", ""),
               "data_wait": stats.get("data_wait", "")}
        path = self.out / "metrics.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
        self.board.record(state.step, row, report)
        if report:
            log.info("eval at step %d: mAP %.4f  micro-F1 %.4f  macro-F1 %.4f", state.step,
                     report["mAP"], report["at_threshold_micro_f1"],
                     report["at_threshold_macro_f1"])

    def _export(self, model) -> None:
        from safetensors.torch import save_file
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        tmp = self.out / ".model.safetensors.tmp"
        save_file(state, str(tmp), metadata={"model": self.s.model, "head": self.s.head})
        tmp.replace(self.out / "model.safetensors")

    def _plot(self) -> None:
        from .plots import plot_metrics
        path = self.out / "metrics.csv"
        if path.exists():
            plot_metrics(path, self.out / "metrics.png")
