"""Optimiser and learning-rate schedule.

Parameter groups: backbone and head, each split into weights (decayed) and norms and biases
(not decayed); the backbone's may have their own peak learning rate (`--lr-backbone`). The
schedule, a factor of each group's peak, is a linear warm-up then a cosine to zero; during a
head-only warm-up the backbone groups have a learning rate of 0 (their parameters stay
registered with DistributedDataParallel, unlike toggling requires_grad).
"""

from __future__ import annotations

import math

import torch

from .errors import TrainError


def make_optimizer(model, name: str, lr: float, weight_decay: float, momentum: float,
                   lr_backbone: float | None = None):
    """AdamW or SGD over the parameter groups; `lr_backbone` (default: `lr`) is the peak
    learning rate of the backbone's groups (discriminative fine-tuning)."""
    groups = []
    for part in ("features", "head"):
        params = [(n, p) for n, p in model.named_parameters() if n.startswith(part)
                  and p.requires_grad]
        for decay in (True, False):
            chosen = [p for _, p in params if (p.ndim > 1) == decay]
            if chosen:
                groups.append({"params": chosen, "weight_decay": weight_decay if decay else 0.0,
                               "part": part, "lr": lr_backbone if part == "features"
                               and lr_backbone is not None else lr})
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise TrainError(f"unknown optimizer {name!r} (adamw or sgd)")


def make_schedule(optimizer, total: int, warmup: int | None, head_warmup: int = 0):
    warmup = warmup if warmup is not None else max(1, total // 20)

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def backbone(step: int) -> float:
        return 0.0 if step < head_warmup else cosine(step)

    factors = [backbone if g["part"] == "features" else cosine for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
