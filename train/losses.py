"""Losses for the three tasks. Multi-label losses are summed over tags and averaged over the
batch, so per-tag gradients do not shrink as the label space grows.

    multilabel: bce (default) | focal | asymmetric     targets: multi-hot floats
    multiclass: cross-entropy                           targets: class index
    binary:     bce on one logit                        targets: 0/1
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SumBCE(nn.Module):
    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="sum")
        return loss / logits.shape[0]


class FocalLoss(nn.Module):
    """Lin et al. 2017: BCE scaled by (1 - p_t)^gamma, alpha-balanced."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        alpha_t = self.alpha * targets + (1 - self.alpha) * (1 - targets)
        return (alpha_t * (1 - p_t) ** self.gamma * bce).sum() / logits.shape[0]


class AsymmetricLoss(nn.Module):
    """Ben-Baruch et al. 2021 (ASL): gamma_neg=4, gamma_pos=0, probability margin clip=0.05."""

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05,
                 eps: float = 1e-8):
        super().__init__()
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(logits.float())
        p_neg = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        pos = targets * torch.log(p.clamp(min=self.eps)) * (1 - p) ** self.gamma_pos
        neg = (1 - targets) * torch.log((1 - p_neg).clamp(min=self.eps)) * p_neg ** self.gamma_neg
        return -(pos + neg).sum() / logits.shape[0]


class MulticlassCE(nn.Module):
    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), targets.argmax(dim=1))


LOSSES = {"bce": SumBCE, "focal": FocalLoss, "asymmetric": AsymmetricLoss}


def make_loss(task: str, name: str = "bce") -> nn.Module:
    """The loss for a task; `name` picks among the multi-label losses."""
    if task == "multiclass":
        return MulticlassCE()
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    return LOSSES[name]()
