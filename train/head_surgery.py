"""Grow and shrink a tagger's head by tag name, when a run starts from a model with another
label space (`train --init-from WD-FOLDER`).

    tags, plan = label_space(source_tags, data_tags, keep="all")
    copy_rows(model, plan, source_names, weight, bias)

The run's label space is the new data's tags (`--keep-tags seen`), or the union of the
source's tags and the new data's (`--keep-tags all`, the default: extending a tagger keeps
what it already knows). A tag in both keeps its row of the source's classifier exactly
(carried); a tag only the new data has gets the fresh row of the new head, whose bias the run
has set at the tag's base rate (added); a source tag not in the label space is removed
(dropped). run/eval.json lists the three under `init_tags`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import TrainError

log = logging.getLogger(__name__)
KEEP_TAGS = ("all", "seen")


@dataclass
class HeadPlan:
    """Which tags of the run's label space come from the source's head and which are new."""

    carried: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The record of eval.json's `init_tags`: counts and names."""
        return {"carried": self.carried, "added": self.added, "dropped": self.dropped,
                "counts": {"carried": len(self.carried), "added": len(self.added),
                           "dropped": len(self.dropped)}}


def label_space(source: list[dict], data: list[dict], keep: str = "all"
                ) -> tuple[list[dict], HeadPlan]:
    """The run's tag rows and the plan. `all`: the source's rows in their order, then the new
    data's rows the source lacks; `seen`: the new data's rows only. Raises TrainError for an
    unknown `keep`."""
    if keep not in KEEP_TAGS:
        raise TrainError(f"--keep-tags {keep!r}: all or seen")
    old = {t["name"] for t in source}
    new = {t["name"] for t in data}
    tags = list(data) if keep == "seen" else \
        list(source) + [t for t in data if t["name"] not in old]
    names = {t["name"] for t in tags}
    plan = HeadPlan(carried=[t["name"] for t in tags if t["name"] in old],
                    added=[t["name"] for t in tags if t["name"] not in old],
                    dropped=[t["name"] for t in source if t["name"] not in names])
    log.info("label space (--keep-tags %s): %d tags carried from the source, %d added, "
             "%d dropped; %d of the source's tags are in the new data", keep,
             len(plan.carried), len(plan.added), len(plan.dropped), len(old & new))
    return tags, plan


def last_linear(model: nn.Module) -> nn.Linear:
    """The head's output layer."""
    return next(m for m in reversed(list(model.head.modules())) if isinstance(m, nn.Linear))


def copy_rows(model: nn.Module, names: list[str], source_names: list[str],
              weight: torch.Tensor, bias: torch.Tensor) -> int:
    """Copy the source classifier's row of each tag of `names` (the model's outputs, in
    order) that `source_names` has into the model's head; the other rows stay as they are.
    Returns the number of rows copied. Raises TrainError when the widths differ."""
    linear = last_linear(model)
    if linear.out_features != len(names):
        raise TrainError(f"{len(names)} tags for a head of {linear.out_features} outputs")
    if weight.shape[1] != linear.in_features:
        raise TrainError(f"the source's classifier takes {weight.shape[1]} features, this "
                         f"model gives {linear.in_features}")
    row = {name: i for i, name in enumerate(source_names)}
    pairs = [(i, row[n]) for i, n in enumerate(names) if n in row]
    if pairs:
        to, src = (torch.tensor(v, dtype=torch.long) for v in zip(*pairs, strict=True))
        with torch.no_grad():
            linear.weight[to] = weight[src].to(linear.weight.dtype)
            linear.bias[to] = bias[src].to(linear.bias.dtype)
    return len(pairs)
