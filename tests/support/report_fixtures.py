"""A small trained run for the report and review tests: tiny images, resnet18, a few epochs.

The shards come from the emulator's world (train_fixtures.emulator_shards) with a manifest
the shards' reader accepts (format name, version, complete), since the report reads the
validation split through shards/reader.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from shards import FORMAT_NAME, FORMAT_VERSION
from support.train_fixtures import emulator_shards, shared_folder
from train.run import Run
from train.settings import TrainSettings


def cached_run(tmp_path_factory) -> Path:
    """One small run per test session (for all its xdist workers), shared by the report and
    review tests; read-only (copy it to write into it)."""
    return shared_folder(tmp_path_factory, "small-run", small_run) / "run"


def small_run(root: Path, posts: int = 240, epochs: int = 2) -> Path:
    """Train on the emulator's pictures at 32 px; returns the run folder (with eval.json)."""
    shards = emulator_shards(root / "shards", posts=posts, size=32, val_every=4)
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, complete=True)
    (shards / "manifest.json").write_text(json.dumps(manifest))
    out = root / "run"
    Run(TrainSettings(shards=str(shards), out=str(out), model="resnet18", weights="none",
                      image_size=32, batch_size=32, workers=0, lr=3e-3, log_every=0,
                      shuffle_buffer=100, checkpoint_every=0, epochs=epochs,
                      min_support=2)).fit()
    return out
