"""The arithmetic precision of a model on a device: one set of choices for `train` and `tag`.

    PRECISIONS                         the --precision choices of every command
    resolve_precision("auto", device)  what `auto` means on that device
    autocast_dtype("bf16")             the dtype torch.autocast runs at (None: fp32)

Importing it needs no torch (the command lines list the choices before torch is there).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_precision(requested: str, device: torch.device) -> str:
    """`auto`: bf16 on a GPU with native bf16 (compute capability 8.0 or later: A100, L4,
    H100, RTX 30xx and newer), fp16 on an older GPU (T4, V100, where bf16 is only emulated;
    training adds a GradScaler), fp32 on CPU; any other value as asked."""
    import torch
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "fp32"
    # Not torch.cuda.is_bf16_supported(): its default counts emulated bf16 as support.
    return "bf16" if tuple(torch.cuda.get_device_capability(device)) >= (8, 0) else "fp16"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None for fp32: no autocast)."""
    import torch
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
