"""Optimiser and learning-rate schedule.

Parameter groups: the head (`head.*`) and the backbone (every other parameter: the trunk and
what sits between it and the head, such as ConvNeXt's LayerNorm after pooling), each split into
weights (decayed) and norms and biases (not decayed); every parameter that requires grad is in
exactly one group. The backbone's groups may have their own peak learning rate
(`--lr-backbone`), and with `--layer-decay` each backbone layer its fraction of it (one
group per layer, see layer_decay.py). The schedule, a factor of each group's peak, is a linear
warm-up then a cosine to zero; during a head-only warm-up the backbone groups have a learning
rate of 0 (their parameters stay registered with DistributedDataParallel, unlike toggling
requires_grad).
"""

from __future__ import annotations

import math

import torch

from .errors import TrainError
from .layer_decay import layer_scales


def parameter_groups(model: torch.nn.Module, weight_decay: float, lr: float,
                     lr_backbone: float | None = None,
                     layer_decay: float | None = None) -> list[dict]:
    """The optimiser's groups: ("features" = the backbone, "head") x (layer, with
    `layer_decay`) x (decayed, not decayed), empty ones left out; together they hold each
    trainable parameter once. `lr_backbone` (default: `lr`) is the peak learning rate of the
    backbone's groups, each layer's scaled by its `lr_scale`."""
    scales = layer_scales(model, layer_decay) if layer_decay is not None else {}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = []
    for part in ("features", "head"):
        peak = lr_backbone if part == "features" and lr_backbone is not None else lr
        params = [(n, p) for n, p in trainable
                  if (n.split(".", 1)[0] == "head") == (part == "head")]
        for scale in sorted({scales.get(n, 1.0) for n, _ in params}):
            for decay in (True, False):
                chosen = [p for n, p in params
                          if scales.get(n, 1.0) == scale and (p.ndim > 1) == decay]
                if chosen:
                    groups.append({"params": chosen, "part": part, "lr": peak * scale,
                                   "lr_scale": scale,
                                   "weight_decay": weight_decay if decay else 0.0})
    return groups


def make_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float,
                   momentum: float, lr_backbone: float | None = None,
                   layer_decay: float | None = None) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD over `parameter_groups` (`lr_backbone`: the backbone's peak
    learning rate, discriminative fine-tuning; `layer_decay`: its decay per layer down from
    the last); raises TrainError for another name."""
    groups = parameter_groups(model, weight_decay, lr, lr_backbone, layer_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise TrainError(f"unknown optimizer {name!r} (adamw or sgd)")


def make_schedule(optimizer: torch.optim.Optimizer, total: int, warmup: int | None,
                  head_warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup` steps (default 5 %), then a cosine to zero at `total`; the
    backbone groups stay at 0 for the first `head_warmup` steps."""
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
