"""`train --init-from SOURCE`: start a model from another run's weights, the layers that fit.

    SOURCE (a run folder, its last.pt, or a .safetensors file) -> init_state() -> a state dict
    -> models.transfer() into the new model (same name and shape; another head is skipped)

`train/run_setup.py` calls `init_from` while it builds the model, before placing it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from torch import nn

from . import checkpoint
from .errors import TrainError
from .models import transfer

log = logging.getLogger(__name__)


def init_from(model: nn.Module, source: Path) -> None:
    """Start from another run's model: for a run folder, the model it kept and exported
    (model.safetensors: the EMA weights where it had EMA, the best evaluated with
    `--keep best`); for an unfinished run, its last checkpoint's EMA or raw weights."""
    state, path, which = init_state(source)
    loaded, skipped = transfer(model, state)
    if not loaded:
        raise TrainError(f"--init-from {source}: no layer fits this model")
    log.info("init from %s: %s; %d tensors loaded, %d skipped (%s)", path, which,
             len(loaded), len(skipped), ", ".join(skipped[:4]))


def init_state(source: Path) -> tuple[dict, Path, str]:
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
