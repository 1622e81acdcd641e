"""Backbone weights from disk, verified: read a file or a timm folder, fill every tensor of the
backbone or refuse with the names.

    state, config = read_weights("lite0.pth")       # .pth, .safetensors or FOLDER
    load_verified(backbone_tensors, required, state, partial=False, label="--weights lite0.pth")

A folder is timm's `local-dir` layout (`config.json` with `architecture` and `pretrained_cfg`,
`model.safetensors` or `pytorch_model.bin`). The check is strict about the backbone: every
tensor the model's features use must come from the file, in its shape; a tensor of the file
that the model does not have at all is "unexpected"; the source's own classifier is ignored.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .errors import WeightsError

log = logging.getLogger(__name__)
FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors")
SHOWN = 4                                    # names listed per kind in the one-line report


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(state dict, the folder's config.json or None) of a .pth / .safetensors file or a timm
    folder. Raises WeightsError for a missing or unreadable file."""
    config = None
    if path.is_dir():
        config_file = path / "config.json"
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text())
            except ValueError as exc:
                raise WeightsError(f"--weights {path}: config.json is not JSON ({exc})") from None
        found = next((path / n for n in FOLDER_FILES if (path / n).is_file()), None)
        if found is None:
            raise WeightsError(f"--weights {path}: a weights folder holds config.json and "
                               "model.safetensors (timm's local-dir layout); neither "
                               f"{' nor '.join(FOLDER_FILES)} is there")
        path = found
    elif not path.is_file():
        raise WeightsError(f"--weights {path}: no such file or folder (use imagenet, none, a "
                           ".pth or .safetensors file or a timm folder)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip, safetensors errors: unreadable
        raise WeightsError(f"--weights {path}: cannot read it ({type(exc).__name__}: "
                           f"{str(exc)[:120]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"--weights {path}: not a state dict of tensors")
    return dict(state), config


def _names(kind: str, names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{len(names)} {kind} ({', '.join(names[:SHOWN])}{more})"


def load_verified(tensors: dict[str, torch.Tensor], required: list[str],
                  state: dict[str, torch.Tensor], partial: bool, label: str) -> dict:
    """Copy `state` into the model's `tensors` (name -> parameter or buffer, in place).

    `required` are the names the backbone uses; other names of `tensors` (the source's own
    classifier) may be absent, or of another shape, and are ignored. Every required tensor
    must be in `state` with its shape, and `state` may hold nothing the model lacks, else
    WeightsError with one line naming them, unless `partial` (then what fits is loaded and
    the rest reported in the log).
    Returns counts: loaded, missing, unexpected, mismatched."""
    needed = set(required)
    differ = {k for k, v in state.items()
              if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)}
    mismatched = [k for k in state if k in differ and k in needed]
    unexpected = [k for k in state if k not in tensors]
    missing = [k for k in required if k not in state and not k.endswith("num_batches_tracked")]
    problems = []
    if missing:
        problems.append(_names("missing", missing))
    if mismatched:
        problems.append(_names("of another shape", [
            f"{k} {tuple(state[k].shape)} vs {tuple(tensors[k].shape)}" for k in mismatched]))
    if unexpected:
        problems.append(_names("unexpected", unexpected))
    if problems and not partial:
        raise WeightsError(f"{label}: does not fit the backbone: {'; '.join(problems)}; "
                           "--weights-partial loads what fits")
    loaded = 0
    with torch.no_grad():
        for k, v in state.items():
            if k in tensors and k not in differ:
                tensors[k].copy_(v)
                loaded += 1
    if problems:
        log.warning("%s: partial load, %d tensors: %s", label, loaded, "; ".join(problems))
    else:
        log.info("%s: every backbone tensor loaded (%d)", label, loaded)
    return {"loaded": loaded, "missing": len(missing), "unexpected": len(unexpected),
            "mismatched": len(mismatched)}


def backbone_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """name -> the model's own parameter or buffer (not a copy), for `load_verified`."""
    return dict(model.state_dict(keep_vars=True))


def used_names(full: dict[str, torch.Tensor], *parts: torch.nn.Module | None) -> list[str]:
    """The names of `full` whose tensors the modules `parts` hold (the backbone's features)."""
    ids = {id(t) for part in parts if part is not None
           for t in part.state_dict(keep_vars=True).values()}
    return [k for k, t in full.items() if id(t) in ids]
