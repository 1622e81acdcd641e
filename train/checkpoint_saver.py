"""The best/last policy: which weights a run keeps, and its checkpoints (as timm's
`CheckpointSaver` owns its best and last files).

    run/checkpoints/last.pt            everything a resume needs (Trainables, StepState, best,
                                       the RNG states), written by rank 0 (`save`), read back
                                       on every rank (`restore`)
    run/checkpoints/best.safetensors   with `--keep best`: the best evaluated weights so far
    run/checkpoints/best.json          and their evaluation report (`note_best`)
    run/model.safetensors              the kept model (`export_kept`)

`train/run.py` asks it after each evaluation (`note_best`), after each epoch and every
`--checkpoint-every` steps (`save`), and at the end (`kept`, `export_kept`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from torch import nn

from shards.atomic import write_bytes_atomic, write_json_atomic

from . import checkpoint, distributed
from .loop import StepState
from .run_setup import Trainables

log = logging.getLogger(__name__)

# What `Run` adds to the evaluation report in eval.json (not part of the evaluation).
RUN_KEYS = frozenset({"step", "epoch", "task", "world_size", "skipped_samples", "kept",
                      "kept_step", "init_tags", "retention"})


class CheckpointSaver:
    """Owns run/checkpoints/ and model.safetensors for one run (`keep`: best | last);
    `best` is the best evaluation so far: {"mAP", "step", "epoch"}, or {}."""

    def __init__(self, out: Path, *, keep: str, metadata: dict[str, str]):
        self.out = out
        self.keep = keep
        self.metadata = metadata            # written into every exported .safetensors
        self.last = out / "checkpoints" / "last.pt"
        self.best_weights = out / "checkpoints" / "best.safetensors"
        self.best_report = out / "checkpoints" / "best.json"
        self.best: dict = {}

    # -- last.pt ------------------------------------------------------------------------
    def checkpoint_step(self) -> int:
        """The step of last.pt (which must exist)."""
        return int(checkpoint.load(self.last)["step"])

    def save(self, state: StepState, parts: Trainables) -> None:
        """Rank 0 writes last.pt: the weights, optimiser, schedule, EMA, scaler, the step
        position, the best evaluation and the RNG states."""
        if not distributed.is_main():
            return
        checkpoint.save(self.last, {
            "model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "ema": parts.ema.state_dict() if parts.ema is not None else None,
            "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
            "step": state.step, "epoch": state.epoch, "batches_in_epoch": state.batches_in_epoch,
            "epoch_loss": state.epoch_loss, "images": state.images, "streams": state.streams,
            "world": state.world,
            "best": self.best, "rng": checkpoint.rng_state()})

    def restore(self, state: StepState, parts: Trainables) -> None:
        """Load last.pt into `parts` and `state` (another ranks x workers layout goes on from
        the same share of the epoch), the RNG states and the best evaluation."""
        saved = checkpoint.load(self.last)
        parts.model.load_state_dict(saved["model"])
        parts.optimizer.load_state_dict(saved["optimizer"])
        parts.scheduler.load_state_dict(saved["scheduler"])
        if parts.ema is not None and saved.get("ema"):
            parts.ema.load_state_dict(saved["ema"])
        if parts.scaler is not None and saved.get("scaler"):
            parts.scaler.load_state_dict(saved["scaler"])
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
        log.info("resumed from %s at step %d (epoch %d, batch %d)", self.last, state.step,
                 state.epoch, state.batches_in_epoch)

    def _recover_best_weights(self) -> None:
        """A run finished by an older version moved best.safetensors onto model.safetensors;
        when eval.json says that model is the remembered best, rank 0 copies it back (every
        rank reads the shared --out, so all agree on the best)."""
        model = self.out / "model.safetensors"
        if self.keep != "best" or not self.best or self.best_weights.exists():
            return
        report = self.out / "eval.json"
        done = json.loads(report.read_text()) if report.exists() else {}
        if (not model.exists() or done.get("kept") != "best"
                or done.get("kept_step") != self.best.get("step")):
            log.warning("--resume: %s is missing; the best evaluation (step %d) is forgotten",
                        self.best_weights, self.best["step"])
            self.best = {}
        elif distributed.is_main():
            write_bytes_atomic(self.best_weights, model.read_bytes())
            write_json_atomic(self.best_report,
                              {k: v for k, v in done.items() if k not in RUN_KEYS})

    # -- best ---------------------------------------------------------------------------
    def note_best(self, report: dict, state: StepState, model: nn.Module) -> None:
        """Remember the best evaluation (rank 0 keeps its weights and report for --keep best)."""
        if "mAP" not in report or (self.best and report["mAP"] <= self.best["mAP"]):
            return
        self.best = {"mAP": report["mAP"], "step": state.step, "epoch": state.epoch}
        if distributed.is_main() and self.keep == "best":
            self.export(model, self.best_weights)
            write_json_atomic(self.best_report, report)

    def kept(self, final: dict) -> tuple[str, dict]:
        """Which model the run keeps ("best" or "last") and its evaluation report: the best
        remembered one with `--keep best` when the last scores lower."""
        if self.keep == "best" and self.best and final.get("mAP", -1) < self.best["mAP"]:
            return "best", json.loads(self.best_report.read_text())
        return "last", final

    def export_kept(self, kept: str, model: nn.Module) -> None:
        """Rank 0 writes model.safetensors: a copy of the best (best.safetensors stays, for a
        resumed run to fall back on), or `model`'s weights."""
        if kept == "best":
            write_bytes_atomic(self.out / "model.safetensors", self.best_weights.read_bytes())
            log.info("kept the model of step %d (mAP %.4f), the best evaluated",
                     self.best["step"], self.best["mAP"])
        else:
            self.export(model, self.out / "model.safetensors")

    def export(self, model: nn.Module, path: Path) -> None:
        """`model`'s weights as a .safetensors file with the run's metadata."""
        from safetensors.torch import save
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, save(state, metadata=self.metadata))
