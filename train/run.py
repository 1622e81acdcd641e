"""A training run: shards in, `run/` out
(docs/DESIGN.md, "Boundary 4: a training run (run/)").

    run/config.json  run/tags.csv  run/checkpoints/last.pt  run/metrics.csv  run/metrics.png
    run/eval.json    run/model.safetensors

`Run.fit()` composes the jobs, each in its own module:

    _setup()   run_setup: device, tags, model, streams, step plan, Trainables; config.json;
               checkpoint_saver.restore() with `resume`
    _train()   epochs.EpochDriver: the epochs; after each (or on schedule) validation.Validator's
               report, its records.MetricsLog row, checkpoint_saver's note_best and save
    _finish()  the last evaluation; checkpoint_saver decides the kept model (the best evaluated,
               or the last with `keep="last"`) and exports it; eval.json says which; the plot
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

import numpy as np
import torch

from shards.atomic import write_json_atomic
from shards.manifest import split_of
from shards.tags import write_tags

from . import distributed
from .checkpoint_saver import CheckpointSaver
from .data import Targets, transforms
from .epochs import EpochDriver, EpochHooks
from .errors import TrainError
from .frozen_rows import freeze_rows
from .head_surgery import label_space
from .loop import Loop, StepState
from .losses import make_loss
from .precision import resolve_precision
from .records import METRICS_CSV, MetricsLog, drop_rows_after, plot_run, write_eval
from .retention import Retention, summary_line
from .run_setup import (
    Placed,
    build_run_model,
    build_streams,
    build_trainables,
    head_priors,
    make_loader,
    pick_device,
    plan_steps,
    read_run_manifest,
    read_run_tags,
    shard_rows,
)
from .settings import TrainSettings
from .shard_fit import binary_positive, check_classes, note_image_size
from .teacher import old_tags_mode, record_of, teacher_for_run
from .tensorboard_log import Board, settings_block
from .validation import Validator
from .wd_init import wd_source

log = logging.getLogger(__name__)


class Run:
    """One training run of `settings`; `fit()` trains and returns the kept model's report."""

    def __init__(self, settings: TrainSettings):
        self.s = settings
        self.out = Path(settings.out)
        self.saver = CheckpointSaver(self.out, keep=settings.keep,
                                     metadata={"model": settings.model, "head": settings.head})

    # -- the run --------------------------------------------------------------------------
    def fit(self) -> dict:
        """Set up, train, finish; the kept model's evaluation report (eval.json)."""
        try:
            self._setup()
            self._train()
            report = self._finish()
            # Every rank leaves together: no rank tears its process group down while a peer
            # is still writing the run's files or in a collective.
            distributed.barrier()
            return report
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
        self.device = pick_device(s.device, local)
        manifest = read_run_manifest(s)
        self.tags, self.task = read_run_tags(s, self.out, manifest)
        self.wd, self.head_plan = wd_source(s), None    # --init-from a WD v3 tagger folder
        if self.wd is not None:
            self.tags, self.head_plan = label_space(self.wd.tags, self.tags, s.keep_tags)
        names = [t["name"] for t in self.tags]
        if self.task == "binary":
            s.positive = binary_positive(self.tags, s.positive)   # recorded in config.json
        check_classes(self.tags, self.task)
        if distributed.is_main():
            note_image_size(manifest, s.image_size)
        # label_ids index the shards' own tags.csv; a grown head's outputs are another list
        rows = shard_rows(s, names) if self.wd is not None else None
        targets = Targets(names, self.task, s.positive, rows=rows)
        self.precision = resolve_precision(s.precision, self.device)
        torch.manual_seed(s.seed)
        np.random.seed(s.seed)
        self.placed = self._build_model(targets.size, local,
                                        head_priors(s, self.task, self.tags, manifest,
                                                    self.head_plan and self.head_plan.carried))
        self.model = self.placed.model
        streams = build_streams(s, manifest=manifest, targets=targets,
                                normalization=self.placed.normalization, device=self.device,
                                rank=self.rank, world=self.world)
        self.train_ds, self.val_ds, self.decoder = streams.train, streams.val, streams.decoder
        self._extension(manifest, targets, rows or names)   # before the resume's restore
        self.plan = plan_steps(s, self.train_ds, self.world)
        self.parts = build_trainables(s, self.model, total=self.plan.total,
                                      precision=self.precision, device=self.device)
        if s.freeze_old_rows:
            freeze_rows(self.model, self.parts.optimizer, self.carried_columns)
        self.state = StepState(streams=self.world * max(1, s.workers), world=self.world)
        self._resume()
        self.trace = self._trace_file(self.rank)
        if distributed.is_main():
            self._write_config(manifest, targets.size)
        self.board = Board(self.out, s.log if distributed.is_main() else "none", s.log_every)
        self.loss_fn = self.board.tap(make_loss(self.task, s.loss))
        self.metrics = MetricsLog(self.out, self.board)
        self.validator = Validator(
            loader=lambda: make_loader(s, self.val_ds, epoch=0, train=False,
                                       device=self.device, decoder=self.decoder),
            loss_fn=self.loss_fn, device=self.device, task=self.task,
            precision=self.precision, channels_last=self.placed.channels_last, tags=self.tags,
            threshold=s.threshold, min_support=s.min_support, lr=s.lr)
        self.driver = EpochDriver(
            s, state=self.state, plan=self.plan, train=self.train_ds,
            loader=lambda epoch, skip: make_loader(s, self.train_ds, epoch=epoch, train=True,
                                                   device=self.device, decoder=self.decoder,
                                                   skip=skip),
            forward_model=self.placed.forward_model, optimizer=self.parts.optimizer,
            board=self.board, device=self.device,
            hooks=EpochHooks(validate=self._validate, record=self._record, save=self._save))

    def _extension(self, manifest: dict, targets: Targets, shard_names: list[str]) -> None:
        """An extension run (tags carried from --init-from's tagger): the teacher's soft
        targets for the training stream (`--old-tags teacher`) and the starting model's mAP
        on the retention set, both from the model as built (before a resume restores it)."""
        s = self.s
        carried = self.head_plan.carried if self.head_plan is not None else []
        names = [t["name"] for t in self.tags]
        self.carried_columns = [names.index(n) for n in carried]
        self.old_tags = s.old_tags = old_tags_mode(s.old_tags, carried)   # config.json
        self.retention = None
        if not carried:
            for flag, value in (("--freeze-old-rows", s.freeze_old_rows),
                                ("--retention-shards", s.retention_shards)):
                if value:
                    raise TrainError(f"{flag} needs --init-from a tagger folder whose tags "
                                     "the run carries")
            return
        evaluation = transforms(s.image_size, False, normalization=self.placed.normalization)
        common = {"transform": evaluation, "device": self.device, "precision": self.precision,
                  "batch_size": s.batch_size, "workers": s.workers}
        if self.old_tags == "teacher":
            split = split_of(s.shards, manifest, "train")
            teacher = teacher_for_run(
                self.model, split, targets, columns=self.carried_columns,
                record=record_of(s.init_from, carried, split), out=self.out, **common)
            self.train_ds.targets = targets.with_teacher(teacher)
        self.retention = Retention.open(s.retention_shards, s.shards, manifest, names,
                                        carried, shard_names, **common)
        if distributed.is_main():
            self.retention.measure_before(self.model)

    def _build_model(self, outputs: int, local: int, priors: torch.Tensor | None) -> Placed:
        """The model with `outputs` outputs, placed on this rank's device."""
        return build_run_model(self.s, outputs=outputs, device=self.device, world=self.world,
                               local_rank=local, priors=priors, wd=self.wd,
                               names=[t["name"] for t in self.tags])

    def _write_config(self, manifest: dict, outputs: int) -> None:
        """run/tags.csv and run/config.json (every setting, resolved), and the settings block."""
        s, plan = self.s, self.plan
        self.out.mkdir(parents=True, exist_ok=True)
        write_tags(self.out / "tags.csv", self.tags)
        write_json_atomic(self.out / "config.json", (
            {**s.to_dict(), "task": self.task, "precision": self.precision,
             "device": str(self.device), "world_size": self.world,
             "preparation": manifest.get("image"),  # how `tag` makes pictures (one picture)
             "normalization": self.placed.normalization.to_dict(),  # what the weights expect
             "model_args": self.wd.model_args if self.wd is not None else None,
             "steps_per_epoch": plan.steps_per_epoch, "total_steps": plan.total}))
        log.info("%s", settings_block(
            s, task=self.task, outputs=outputs,
            params=sum(p.numel() for p in self.model.parameters()),
            train_samples=self.train_ds.split.samples,
            val_samples=self.val_ds.split.samples if self.val_ds else 0,
            steps_per_epoch=plan.steps_per_epoch, total_steps=plan.total,
            precision=self.precision, device=self.device, world=self.world))

    def _resume(self) -> None:
        """With `resume`, the state of last.pt (the same on every rank), else a fresh start."""
        found = self.s.resume and self.saver.last.exists()
        distributed.check_same_checkpoint(self.saver.checkpoint_step() if found else None)
        if found:
            self.saver.restore(self.state, self.parts)
            if distributed.is_main():
                drop_rows_after(self.out / METRICS_CSV, self.state.step)
        elif self.s.resume:
            log.warning("--resume: no checkpoint in %s, starting afresh", self.saver.last.parent)

    def _loop(self) -> Loop:
        s = self.s
        return Loop(loss_fn=self.loss_fn, optimizer=self.parts.optimizer,
                    scheduler=self.parts.scheduler, device=self.device,
                    precision=self.precision, grad_accum=s.grad_accum,
                    total_steps=self.plan.total,
                    log_every=s.log_every if distributed.is_main() else 0,
                    channels_last=self.placed.channels_last, ema=self.parts.ema,
                    scaler=self.parts.scaler, on_step=self._on_step, trace=self.trace,
                    decoder=self.decoder)

    def _on_step(self) -> bool:
        """After each optimizer step (the epoch driver's hook); True stops the run."""
        return self.driver.on_step()

    def _train(self) -> None:
        """Epochs until the last one or `--max-steps`; per-epoch evaluation and checkpoint."""
        self.driver.run(self._loop())

    def _finish(self) -> dict:
        """The last evaluation; rank 0 exports the kept model and writes eval.json.

        The evaluations that compete for `--keep best` are the scheduled ones (every epoch or
        `--eval-every` steps) and the one at the run's planned end. A run cut short by
        `--max-steps` evaluates its last model and keeps the better of it and the best, but
        does not remember that evaluation: resumed, it keeps what an uninterrupted run keeps."""
        state = self.state
        final = self._validate(compete=state.step >= self.plan.total)
        self._save()
        kept, final = self.saver.kept(final)
        final.update({"step": state.step, "epoch": state.epoch, "task": self.task,
                      "world_size": self.world,
                      "skipped_samples": int(self.train_ds.errors.sum()),
                      "kept": kept, "kept_step": self.saver.best.get("step", state.step)
                      if kept == "best" else state.step})
        if self.head_plan is not None:
            final["init_tags"] = self.head_plan.to_dict()
        if self.retention is not None and distributed.is_main():
            final["retention"] = self.retention.result(
                self._kept_model(kept), final, [t["name"] for t in self.tags],
                self.head_plan.added)
            log.info("retention: %s", summary_line(final["retention"]))
        if distributed.is_main():
            write_eval(self.out, final)
            self.saver.export_kept(kept, self.parts.eval_model())
            plot_run(self.out)
        return final

    def _kept_model(self, kept: str) -> torch.nn.Module:
        """The model the run keeps: the evaluated weights, or the remembered best's."""
        model = self.parts.eval_model()
        if kept != "best":
            return model
        from safetensors.torch import load_file
        best = copy.deepcopy(model)
        best.load_state_dict(load_file(str(self.saver.best_weights), device=str(self.device)))
        return best

    # -- the hooks of the epoch driver ----------------------------------------------------
    def _validate(self, compete: bool = True) -> dict:
        """The evaluation report at this step on every rank ({} without a validation split).
        With `compete`, a new evaluation is a candidate for `--keep best`."""
        if self.val_ds is None:
            return {}
        model = self.parts.eval_model()
        report, new = self.validator.report_at(self.state, model)
        if new and compete:
            self.saver.note_best(report, self.state, model)
        return report

    def _record(self, report: dict, stats: dict) -> None:
        if distributed.is_main():
            self.metrics.append(self.state, report, stats)

    def _save(self) -> None:
        self.saver.save(self.state, self.parts)

    def _trace_file(self, rank: int):
        """With BOORU_TAGGER_TRACE=1 in the environment (a debugging aid), each rank lists
        the sample keys it trained on in run/samples-rank<r>.txt as `step key` lines."""
        if os.environ.get("BOORU_TAGGER_TRACE") != "1" and not self.s.extra.get("trace"):
            return None
        self.out.mkdir(parents=True, exist_ok=True)
        return (self.out / f"samples-rank{rank}.txt").open("a")
