"""A training run: shards in, `run/` out
(docs/DESIGN.md, "Boundary 4: a training run (run/)").

    run/config.json  run/tags.csv  run/checkpoints/last.pt  run/metrics.csv  run/metrics.png
    run/eval.json    run/model.safetensors

`Run.fit()` is `_setup()` (data streams, model, optimiser from `TrainSettings`; the last
checkpoint with `resume`), `_train()` (epoch by epoch, evaluating and checkpointing) and
`_finish()` (the last evaluation; exports the best evaluated model, or the last with
`keep="last"`; eval.json says which).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from shards.atomic import write_bytes_atomic, write_json_atomic
from shards.errors import ManifestError, ShardsError
from shards.labels import label_counts
from shards.manifest import pattern_manifest, read_manifest, split_of
from shards.tags import read_tags, write_tags

from . import checkpoint, distributed
from .data import (
    DeviceDecoder,
    ShardStream,
    Targets,
    encoded_collate,
    transforms,
)
from .errors import TrainError
from .head_surgery import label_space
from .loop import Loop, StepState, evaluate, train_one_epoch
from .losses import make_loss
from .metrics import evaluate as score
from .models import build_model, prior_bias, transfer
from .normalization import recorded_in
from .optim import make_optimizer, make_schedule
from .precision import resolve_precision
from .settings import TrainSettings
from .shard_fit import binary_positive, check_classes, note_image_size
from .tensorboard_log import Board, settings_block
from .wd_init import build_from_wd, wd_source

log = logging.getLogger(__name__)

# What `_finish` adds to the evaluation report in eval.json (not part of the evaluation).
_RUN_KEYS = {"step", "epoch", "task", "world_size", "skipped_samples", "kept", "kept_step",
             "init_tags"}


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
        """The shards' manifest; for a brace pattern of tar URLs, one listing them with the
        samples of each, counted on rank 0 (from each shard's stats, or by reading it)."""
        s = self.s
        if "{" not in s.shards and not s.shards.endswith(".tar"):
            return read_manifest(s.shards, s.allow_incomplete)
        if not s.tags:
            raise TrainError("a shard pattern such as 'https://host/ds/train/{00000..00099}.tar'"
                             " needs --tags (tags.csv path or URL)")
        manifest = pattern_manifest(s.shards, s.epoch_samples) if distributed.is_main() else None
        return distributed.broadcast(manifest)

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
        augment = transforms(s.image_size, True, tuple(s.crop_scale), s.trivial_augment,
                             self.normalization)
        self.decoder = DeviceDecoder(augment, self.device) if s.device_decode else None
        train = ShardStream(split_of(s.shards, manifest, "train"), targets,
                            None if s.device_decode else augment, seed=s.seed,
                            shuffle_buffer=s.shuffle_buffer, open_shards=s.open_shards,
                            batch_size=s.batch_size, rank=self.rank, world=self.world)
        try:
            val_split = split_of(s.shards, manifest, "val")
        except ManifestError:
            val_split = None
        val = None
        if val_split is not None and val_split.urls and val_split.samples:
            val = ShardStream(val_split, targets,
                              transforms(s.image_size, False, normalization=self.normalization),
                              seed=s.seed, shuffle=False, exact=False, rank=self.rank,
                              world=self.world)
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
            self._setup()
            self._train()
            return self._finish()
        finally:
            if getattr(self, "trace", None) is not None:
                self.trace.close()
            if getattr(self, "board", None) is not None:
                self.board.close()
            distributed.teardown()

    def _setup(self) -> None:
        """Data, model, optimiser and the resume state; rank 0 writes config.json."""
        s = self.s
        self.rank, self.world, local = distributed.setup()
        self.device = self._device(local)
        manifest = self._manifest()
        self.tags, self.task = self._tags(manifest)
        self.wd, self.head_plan = wd_source(s), None    # --init-from a WD v3 tagger folder
        if self.wd is not None:
            self.tags, self.head_plan = label_space(self.wd.tags, self.tags, s.keep_tags)
        names = [t["name"] for t in self.tags]
        if self.task == "binary":
            s.positive = binary_positive(self.tags, s.positive)   # recorded in config.json
        check_classes(self.tags, self.task)
        if distributed.is_main():
            note_image_size(manifest, s.image_size)
        targets = Targets(names, self.task, s.positive)
        self.precision = resolve_precision(s.precision, self.device)
        torch.manual_seed(s.seed)
        np.random.seed(s.seed)
        self._build_model(targets.size, local, self._priors(manifest))
        self.train_ds, self.val_ds = self._loaders(manifest, targets)
        self._plan_steps()
        self._build_optimiser()
        self._resume()
        self.trace = self._trace_file(self.rank)
        if distributed.is_main():
            self.out.mkdir(parents=True, exist_ok=True)
            write_tags(self.out / "tags.csv", self.tags)
            write_json_atomic(self.out / "config.json", (
                {**s.to_dict(), "task": self.task, "precision": self.precision,
                 "device": str(self.device), "world_size": self.world,
                 "preparation": manifest.get("image"),  # how `tag` makes pictures (one picture)
                 "normalization": self.normalization.to_dict(),   # what the weights expect
                 "model_args": self.wd.model_args if self.wd is not None else None,
                 "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total}))
            log.info("%s", settings_block(
                s, self.task, targets.size, sum(p.numel() for p in self.model.parameters()),
                self.train_ds.split.samples, self.val_ds.split.samples if self.val_ds else 0,
                self.steps_per_epoch, self.total, self.precision, self.device, self.world))
        self.board = Board(self.out, s.log if distributed.is_main() else "none", s.log_every)
        self.loss_fn = self.board.tap(make_loss(self.task, s.loss))

    def _priors(self, manifest: dict) -> torch.Tensor | None:
        """Each tag's share of the training samples, counted from the `label_ids` of the train
        split's parquet files (tags.csv counts may come from a far bigger population), for a
        multi-label head whose bias starts at the base rates; None when not wanted, or (with
        a warning) when the shards hold no labels to count."""
        if self.task != "multilabel" or self.s.head_bias == "default":
            return None
        if self.s.head_bias != "prior":
            raise TrainError(f"unknown head bias {self.s.head_bias!r} (prior or default)")
        names = [t["name"] for t in self.tags]
        try:        # label_ids are rows of the shards' own index; the run's may be another
            own = [t["name"] for t in read_tags(f"{self.s.shards.rstrip('/')}/tags.csv")]
        except ShardsError:
            own = names                     # a brace pattern: --tags is the shards' index
        try:
            positives, samples = label_counts(split_of(self.s.shards, manifest, "train").urls,
                                              len(own))
        except ShardsError as exc:
            log.warning("--head-bias prior: %s; the head starts at PyTorch's default bias", exc)
            return None
        if not samples:
            return None
        row = {name: i for i, name in enumerate(own)}
        missing = [n for n in names if n not in row]
        if missing:
            log.warning("--head-bias prior: %d tags of the run are not in the shards' index "
                        "(%s): they start at the lowest base rate", len(missing),
                        ", ".join(missing[:5]))
        counts = [float(positives[row[n]]) if n in row else 0.0 for n in names]
        log.info("head bias: the base rates of %d tags in %d training samples", len(names),
                 samples)
        return torch.tensor(counts, dtype=torch.float64) / samples

    def _build_model(self, outputs: int, local: int, priors: torch.Tensor | None) -> None:
        s = self.s
        if self.wd is not None:
            model = build_from_wd(self.wd, [t["name"] for t in self.tags], s, priors)
        else:
            model = build_model(s.model, outputs, s.weights, s.head, s.dropout, s.image_size,
                                s.weights_partial)
        self.normalization = model.normalization
        if priors is not None and self.wd is None:
            prior_bias(model, priors)
        if s.init_from and self.wd is None:
            self._init_from(model, Path(s.init_from))
            self.normalization = recorded_in(Path(s.init_from)) or self.normalization
        self.channels_last = s.channels_last and self.device.type == "cuda"
        self.model = model.to(self.device, memory_format=torch.channels_last
                              if self.channels_last else torch.preserve_format)
        if s.freeze_backbone:
            self.model.freeze_backbone()
        self.forward_model = self.model
        if self.world > 1:
            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[local] if self.device.type == "cuda" else None)
        if s.compile:
            self.forward_model = torch.compile(self.forward_model)

    def _plan_steps(self) -> None:
        """Batches per rank and epoch (equal on every rank by construction), steps in all."""
        s = self.s
        workers = max(1, s.workers)
        self.per_epoch = workers * self.train_ds.per_stream(workers, self.world) // s.batch_size
        self.steps_per_epoch = -(-self.per_epoch // s.grad_accum)
        self.total = s.epochs * self.steps_per_epoch
        self.stop_at = min(self.total, s.max_steps) if s.max_steps else self.total

    def _build_optimiser(self) -> None:
        s = self.s
        self.optimizer = make_optimizer(self.model, s.optimizer, s.lr, s.weight_decay,
                                        s.momentum, s.lr_backbone)
        self.scheduler = make_schedule(self.optimizer, self.total, s.warmup_steps,
                                       0 if s.freeze_backbone else s.head_warmup_steps)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(s.ema))
                    if s.ema else None)
        self.scaler = (torch.amp.GradScaler(self.device.type) if self.precision == "fp16"
                       else None)
        self.state = StepState(streams=self.world * max(1, s.workers), world=self.world)
        self.best: dict = {}
        self._last_eval: tuple[int, dict] = (-1, {})   # (step, report) of the latest evaluation

    def _resume(self) -> None:
        found = self.s.resume and self.ckpt.exists()
        distributed.check_same_checkpoint(self._checkpoint_step() if found else None)
        if found:
            self._restore()
        elif self.s.resume:
            log.warning("--resume: no checkpoint in %s, starting afresh", self.ckpt.parent)

    def _checkpoint_step(self) -> int:
        return int(checkpoint.load(self.ckpt)["step"])

    def _loop(self) -> Loop:
        s = self.s
        return Loop(self.loss_fn, self.optimizer, self.scheduler, self.device, self.precision,
                    s.grad_accum, self.total, s.log_every if distributed.is_main() else 0,
                    self.channels_last, self.ema, self.scaler, self._on_step, self.trace,
                    self.decoder)

    def _on_step(self) -> bool:
        s, state = self.s, self.state
        if s.head_warmup_steps and state.step == s.head_warmup_steps:
            log.info("step %d: head warm-up done, the backbone trains too", state.step)
        self.board.step(state.step, state.images, self.optimizer)
        if s.eval_every and state.step % s.eval_every == 0:
            self._record(self._validate(), {})
        if s.checkpoint_every and state.step % s.checkpoint_every == 0:
            self._save()                    # after the evaluation: it holds this step's best
        return state.step >= self.stop_at

    def _train(self) -> None:
        """Epochs until the last one or `--max-steps`; per-epoch evaluation and checkpoint."""
        s, state = self.s, self.state
        while state.step < self.stop_at and state.epoch < s.epochs:
            loader = self._loader(self.train_ds, state.epoch, True, state.batches_in_epoch)
            stats = train_one_epoch(self.forward_model, loader, state, self._loop())
            stats["train_loss"] = distributed.mean(stats["train_loss"], self.device)
            errors = int(self.train_ds.errors.sum())
            if errors:
                log.warning("%d unreadable shards or samples skipped so far", errors)
            if state.step >= self.stop_at and state.batches_in_epoch < self.per_epoch:
                break
            state.epoch += 1
            state.batches_in_epoch = 0
            state.epoch_loss = 0.0
            if not s.eval_every:
                self._record(self._validate(), stats)
            self._save()                    # after the evaluation: it holds this step's best

    def _finish(self) -> dict:
        """The last evaluation; rank 0 exports the kept model and writes eval.json.

        The evaluations that compete for `--keep best` are the scheduled ones (every epoch or
        `--eval-every` steps) and the one at the run's planned end. A run cut short by
        `--max-steps` evaluates its last model and keeps the better of it and the best, but
        does not remember that evaluation: resumed, it keeps what an uninterrupted run keeps."""
        state = self.state
        final = self._validate(compete=state.step >= self.total)
        self._save()
        kept = "last"
        if self.s.keep == "best" and self.best and final.get("mAP", -1) < self.best["mAP"]:
            kept, final = "best", json.loads(self._best_report().read_text())
        final.update({"step": state.step, "epoch": state.epoch, "task": self.task,
                      "world_size": self.world,
                      "skipped_samples": int(self.train_ds.errors.sum()),
                      "kept": kept, "kept_step": self.best.get("step", state.step)
                      if kept == "best" else state.step})
        if self.head_plan is not None:
            final["init_tags"] = self.head_plan.to_dict()
        if distributed.is_main():
            write_json_atomic(self.out / "eval.json", final)
            if kept == "best":
                # A copy: best.safetensors stays, for a resumed run to fall back on.
                write_bytes_atomic(self.out / "model.safetensors",
                                   self._best_weights().read_bytes())
                log.info("kept the model of step %d (mAP %.4f), the best evaluated",
                         self.best["step"], self.best["mAP"])
            else:
                self._export(self._eval_model(), self.out / "model.safetensors")
            self._plot()
        return final

    def _eval_model(self):
        return self.ema.module if self.ema is not None else self.model

    def _validate(self, compete: bool = True) -> dict:
        """Evaluate on every rank's share; rank 0 scores all rows once; all get the report.
        With `compete`, the evaluation is a candidate for `--keep best`. A second call at
        the same step (the run's end after an epoch's) reuses the first one's report. A NaN
        score on any rank stops the run on every rank (TrainError naming the step)."""
        if self.val_ds is None:
            return {}
        if self._last_eval[0] == self.state.step:
            return dict(self._last_eval[1])
        distributed.broadcast_buffers(self._eval_model())
        sc, tg, loss_sum, n = evaluate(self._eval_model(), self._loader(self.val_ds, 0, False),
                                       self.loss_fn, self.device, self.task, self.precision,
                                       self.channels_last)
        loss_sum, n, nans, size = distributed.total(
            [loss_sum, n, float(torch.isnan(sc).sum()), float(sc.numel())], self.device)
        if nans:
            raise TrainError(
                f"the model diverged by step {self.state.step} (epoch {self.state.epoch}): "
                f"{int(nans)} of {int(size)} validation scores are NaN; lower --lr (now "
                f"{self.s.lr:g}) or lengthen --warmup-steps, and start afresh")
        sc = distributed.gather_rows(sc, self.device)
        tg = distributed.gather_rows(tg, self.device)
        report: dict = {}
        if distributed.is_main() and sc is not None and len(sc):
            multilabel = self.task == "multilabel"
            categories = np.array([t["category"] for t in self.tags])
            counts = np.array([t["count"] for t in self.tags], dtype=np.float64)
            report = score(sc, tg, categories if multilabel else None,
                           counts if multilabel else None, self.s.threshold,
                           self.s.min_support)
            report["val_loss"] = loss_sum / max(n, 1)
        report = distributed.broadcast(report)
        self._last_eval = (self.state.step, dict(report))
        if compete:
            self._note_best(report)
        return report

    def _note_best(self, report: dict) -> None:
        """Remember the best evaluation (rank 0 keeps its weights and report for --keep best)."""
        if "mAP" not in report or (self.best and report["mAP"] <= self.best["mAP"]):
            return
        self.best = {"mAP": report["mAP"], "step": self.state.step, "epoch": self.state.epoch}
        if distributed.is_main() and self.s.keep == "best":
            self._export(self._eval_model(), self._best_weights())
            write_json_atomic(self._best_report(), report)

    def _best_weights(self) -> Path:
        return self.out / "checkpoints" / "best.safetensors"

    def _best_report(self) -> Path:
        return self.out / "checkpoints" / "best.json"

    def _trace_file(self, rank: int):
        """With BOORU_TAGGER_TRACE=1 in the environment (a debugging aid), each rank lists
        the sample keys it trained on in run/samples-rank<r>.txt as `step key` lines."""
        if os.environ.get("BOORU_TAGGER_TRACE") != "1" and not self.s.extra.get("trace"):
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        return (self.out / f"samples-rank{rank}.txt").open("a")

    # -- checkpoints, metrics, export -----------------------------------------------------
    def _save(self) -> None:
        if not distributed.is_main():
            return
        state = self.state
        checkpoint.save(self.ckpt, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": state.step, "epoch": state.epoch, "batches_in_epoch": state.batches_in_epoch,
            "epoch_loss": state.epoch_loss, "images": state.images, "streams": state.streams,
            "world": state.world,
            "best": self.best, "rng": checkpoint.rng_state()})

    def _restore(self) -> None:
        saved = checkpoint.load(self.ckpt)
        state = self.state
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if self.ema is not None and saved.get("ema"):
            self.ema.load_state_dict(saved["ema"])
        if self.scaler is not None and saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        self.best = dict(saved.get("best") or {})
        state.step, state.epoch = saved["step"], saved["epoch"]
        state.batches_in_epoch, state.images = saved["batches_in_epoch"], saved["images"]
        state.epoch_loss = float(saved.get("epoch_loss", 0.0))
        if saved.get("streams", state.streams) != state.streams:
            # Another world size or worker count: the epoch goes on from the same share of
            # its samples, in a new order (exact continuation needs the same layout).
            world_before, before = saved.get("world", 1), state.batches_in_epoch
            state.batches_in_epoch = state.batches_in_epoch * world_before // state.world
            if before:
                state.epoch_loss *= state.batches_in_epoch / before
            log.warning("resuming with %d ranks x workers instead of %d: the rest of epoch %d "
                        "is read in a different order", state.streams, saved["streams"],
                        state.epoch)
        checkpoint.set_rng_state(saved["rng"])
        self._recover_best_weights()
        if distributed.is_main():
            self._drop_metrics_after(state.step)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", self.ckpt, state.step,
                 state.epoch, state.batches_in_epoch)

    def _drop_metrics_after(self, step: int) -> None:
        """Drop the metrics.csv rows of steps after the checkpoint (written before a crash
        that came ahead of the next checkpoint); the resumed run writes them again."""
        path = self.out / "metrics.csv"
        if not path.exists():
            return
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if int(r["step"]) <= step]
        if len(kept) == len(rows) or not rows:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
        write_bytes_atomic(path, buffer.getvalue().encode())
        log.info("metrics.csv: dropped %d rows after step %d, the checkpoint's",
                 len(rows) - len(kept), step)

    def _recover_best_weights(self) -> None:
        """A run finished by an older version moved best.safetensors onto model.safetensors;
        when eval.json says that model is the remembered best, rank 0 copies it back (every
        rank reads the shared --out, so all agree on the best)."""
        best, model = self._best_weights(), self.out / "model.safetensors"
        if self.s.keep != "best" or not self.best or best.exists():
            return
        report = self.out / "eval.json"
        done = json.loads(report.read_text()) if report.exists() else {}
        if (not model.exists() or done.get("kept") != "best"
                or done.get("kept_step") != self.best.get("step")):
            log.warning("--resume: %s is missing; the best evaluation (step %d) is forgotten",
                        best, self.best["step"])
            self.best = {}
        elif distributed.is_main():
            write_bytes_atomic(best, model.read_bytes())
            write_json_atomic(self._best_report(),
                              {k: v for k, v in done.items() if k not in _RUN_KEYS})

    def _init_from(self, model, source: Path) -> None:
        """Start from another run's model: for a run folder, the model it kept and exported
        (model.safetensors: the EMA weights where it had EMA, the best evaluated with
        `--keep best`); for an unfinished run, its last checkpoint's EMA or raw weights."""
        state, path, which = self._init_state(source)
        loaded, skipped = transfer(model, state)
        if not loaded:
            raise TrainError(f"--init-from {source}: no layer fits this model")
        log.info("init from %s: %s; %d tensors loaded, %d skipped (%s)", path, which,
                 len(loaded), len(skipped), ", ".join(skipped[:4]))

    @staticmethod
    def _init_state(source: Path) -> tuple[dict, Path, str]:
        """The weights `--init-from` takes, their file, and which weights they are, in words."""
        from safetensors.torch import load_file
        kept = source / "model.safetensors"
        if source.is_dir() and kept.exists():
            config, report = source / "config.json", source / "eval.json"
            ema = config.exists() and bool(json.loads(config.read_text()).get("ema"))
            done = json.loads(report.read_text()) if report.exists() else {}
            what = (f"the {done['kept']} evaluated model, step {done['kept_step']}"
                    if "kept" in done else "the exported model")
            return load_file(str(kept)), kept, f"{what} ({'EMA' if ema else 'raw'} weights)"
        path = source / "checkpoints" / "last.pt" if source.is_dir() else source
        if not path.exists():
            raise TrainError(f"--init-from {source}: no model.safetensors or checkpoint there")
        if path.suffix == ".safetensors":
            return load_file(str(path)), path, "the weights of that file"
        saved = checkpoint.load(path)
        if saved.get("ema"):            # the weights that were evaluated and exported
            state = {k[len("module."):]: v for k, v in saved["ema"].items()
                     if k.startswith("module.")}
            return state, path, f"the last checkpoint's EMA weights, step {saved.get('step')}"
        return saved["model"], path, f"the last checkpoint's raw weights, step {saved.get('step')}"

    def _record(self, report: dict, stats: dict) -> None:
        if not distributed.is_main():
            return
        state = self.state
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

    def _export(self, model, path: Path) -> None:
        from safetensors.torch import save
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, save(state, metadata={"model": self.s.model,
                                                       "head": self.s.head}))

    def _plot(self) -> None:
        from .plots import plot_metrics
        path = self.out / "metrics.csv"
        if path.exists():
            plot_metrics(path, self.out / "metrics.png")
