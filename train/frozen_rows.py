"""`--freeze-old-rows`: the carried rows of the head's output layer stay the source's, bit
for bit, while the new rows (and, without `--freeze-backbone`, the backbone) train.

    handle = freeze_rows(model, optimizer, columns)

The rows are copied when the model is built (the source's values) and written back after
every optimizer step (a step post-hook), so neither their gradients, nor AdamW's or SGD's
momentum, nor weight decay can move them; an EMA of the weights then averages the same
values and keeps them too. A resumed run's checkpoint holds the same rows.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .head_surgery import last_linear

log = logging.getLogger(__name__)


def freeze_rows(model: nn.Module, optimizer: torch.optim.Optimizer, columns: list[int]):
    """Keep rows `columns` of the head's last linear layer (weight and bias) as they are now;
    the hook's handle (`.remove()` lets them train again)."""
    linear = last_linear(model)
    index = torch.as_tensor(columns, dtype=torch.long, device=linear.weight.device)
    weight = linear.weight.detach()[index].clone()
    bias = linear.bias.detach()[index].clone() if linear.bias is not None else None

    def restore(_optimizer, _args, _kwargs) -> None:
        with torch.no_grad():
            linear.weight[index] = weight
            if bias is not None:
                linear.bias[index] = bias

    log.info("--freeze-old-rows: %d of the head's %d rows stay the source's", len(columns),
             linear.out_features)
    return optimizer.register_step_post_hook(restore)
