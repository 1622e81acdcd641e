"""Checkpoints: everything a run needs to continue, written atomically, loadable with
`torch.load(..., weights_only=True)` (tensors, numbers, strings, lists and dicts only).

    run/checkpoints/last.pt   model, EMA, optimizer, scheduler, step, epoch, RNG states
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from shards.atomic import atomic_write


def rng_state() -> dict:
    """Python, numpy and torch RNG states as plain tensors and lists."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
             "numpy_rest": [kind, int(pos), int(has_gauss), float(cached)],
             "python": [version, list(internal), gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, pos, has_gauss, cached = state["numpy_rest"]
    np.random.set_state((kind, state["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
                         cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, payload: dict) -> None:
    """Write `payload` to `path` atomically (shards.atomic: temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        torch.save(payload, fh)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)
