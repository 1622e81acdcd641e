"""Forgetting, measured: the carried tags' mAP of an extension run's starting model and of
its result, on a held-out set of the old kind of data.

    retention = Retention.open(s, manifest, names, carried, shard_rows, ...)
    retention.measure_before(model)       # the starting model, before the first step
    record = retention.result(kept_model, final_report, added)   # eval.json's `retention`

The held-out set is `--retention-shards DIR` (every split of that build; its tags.csv rows
map onto the run's outputs by name) or else the run's validation split. The mAP is over the
carried tags with at least one positive there (macro AP, as sklearn's
average_precision_score); `new_tags_ap` is the added tags' macro AP on the validation split
(the final evaluation's per-tag AP), and `new_tags_ap_held_out` the same on the held-out set
where it labels them (a held-out set of pictures of every kind says whether the new tags are
found in pictures unlike the few they were taught on; NaN where it does not label them).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from shards.errors import ManifestError, ShardsError
from shards.manifest import Split, read_manifest, split_of
from shards.tags import read_tags

from .data import ShardStream, Targets
from .errors import TrainError
from .loop import predict_split
from .losses import SumBCE
from .metrics import average_precision

log = logging.getLogger(__name__)


class Retention:
    """The held-out set of one extension run and the starting model's mAP on it."""

    def __init__(self, label: str, splits: list[Split], targets: Targets, columns: list[int],
                 added: list[int], *, transform, device: torch.device, precision: str,
                 batch_size: int, workers: int):
        self.label = label                    # what eval.json names as the set
        self.splits = splits
        self.targets = targets
        self.columns = np.asarray(columns, dtype=np.int64)      # the carried outputs
        self.added = np.asarray(added, dtype=np.int64)          # the added outputs
        self.transform = transform
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.workers = workers
        self.before: float | None = None
        self.samples = 0
        self.old_tags = 0
        self.new_tags = 0

    @classmethod
    def open(cls, retention_shards: str | None, shards: str, manifest: dict,
             names: list[str], carried: list[str], shard_rows: list[str], **kwargs) -> Retention:
        """The set `--retention-shards` names (all its splits), else the run's validation
        split. Raises TrainError when there is neither, or the retention shards cannot be
        read."""
        position = {n: i for i, n in enumerate(names)}
        columns = [position[n] for n in carried]
        added = [i for i, n in enumerate(names) if n not in set(carried)]
        if retention_shards:
            try:
                found = read_manifest(retention_shards, allow_incomplete=False)
                rows = [t["name"] for t in read_tags(f"{retention_shards.rstrip('/')}"
                                                     "/tags.csv")]
                splits = [split_of(retention_shards, found, name)
                          for name in sorted(found.get("splits") or {})]
            except (ShardsError, OSError) as exc:
                raise TrainError(f"--retention-shards {retention_shards}: {exc}") from None
            splits = [sp for sp in splits if sp.urls and sp.samples]
            if not splits:
                raise TrainError(f"--retention-shards {retention_shards}: no samples")
            return cls(retention_shards, splits, Targets(names, "multilabel", rows=rows),
                       columns, added, **kwargs)
        try:
            val = split_of(shards, manifest, "val")
        except ManifestError:
            val = None
        if val is None or not val.urls or not val.samples:
            raise TrainError("an extension run measures forgetting on a held-out set: give "
                             "--retention-shards DIR (shards of the old kind of data) or "
                             "shards with a validation split")
        return cls("validation split", [val], Targets(names, "multilabel", rows=shard_rows),
                   columns, added, **kwargs)

    def scores(self, model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
        """`model`'s scores and the targets of every output on the held-out set."""
        scores, targets = [], []
        for split in self.splits:
            stream = ShardStream(split, self.targets, self.transform, shuffle=False,
                                 exact=False, rank=0, world=1)
            loader = DataLoader(stream, batch_size=self.batch_size, num_workers=self.workers)
            sc, tg, _, _ = predict_split(model, loader, SumBCE(), self.device,
                                         task="multilabel", precision=self.precision)
            if len(sc):
                scores.append(sc.numpy())
                targets.append(tg.numpy())
        if not scores:
            raise TrainError(f"retention set {self.label}: no readable sample")
        return np.concatenate(scores), np.concatenate(targets)

    def mean_ap(self, model: nn.Module) -> float:
        """The carried tags' macro AP (tags with positives in the set)."""
        return self._mean_aps(model)[0]

    def _mean_aps(self, model: nn.Module) -> tuple[float, float]:
        """The macro AP of the carried and of the added outputs on the set (each over its
        tags with positives there; NaN for none); counts the samples and such tags."""
        scores, targets = self.scores(model)
        old = average_precision(scores[:, self.columns], targets[:, self.columns])
        new = (average_precision(scores[:, self.added], targets[:, self.added])
               if len(self.added) else np.zeros(0))
        self.samples, self.old_tags = len(scores), int(np.isfinite(old).sum())
        self.new_tags = int(np.isfinite(new).sum())
        return (float(np.nanmean(old)) if self.old_tags else float("nan"),
                float(np.nanmean(new)) if self.new_tags else float("nan"))

    def measure_before(self, model: nn.Module) -> float:
        """The starting model's mAP (call before the first step)."""
        self.before = self.mean_ap(model)
        log.info("retention: the starting model's mAP over %d carried tags on %d samples of "
                 "the %s: %.4f", self.old_tags, self.samples, self.label, self.before)
        return self.before

    def result(self, model: nn.Module, final: dict, names: list[str],
               added: list[str]) -> dict:
        """eval.json's `retention` record for the kept `model` and its `final` report."""
        after, new_held_out = self._mean_aps(model)
        ap = (final.get("per_tag") or {}).get("ap") or []
        new = [ap[names.index(n)] for n in added if names.index(n) < len(ap)]
        new = [v for v in new if v is not None and math.isfinite(v)]
        before = self.before if self.before is not None else float("nan")
        return {"shards": self.label, "samples": self.samples, "old_tags": self.old_tags,
                "map_before": before, "map_after": after, "drop": before - after,
                "new_tags": len(new),
                "new_tags_ap": float(np.mean(new)) if new else float("nan"),
                "new_tags_held_out": self.new_tags, "new_tags_ap_held_out": new_held_out}


def summary_line(record: dict) -> str:
    """eval.json's `retention` in one line, for the end of a run and the report."""
    return (f"old tags: mAP {record['map_before']:.4f} before, {record['map_after']:.4f} "
            f"after (drop {record['drop']:+.4f}) over {record['old_tags']} carried tags on "
            f"{record['samples']} samples of {record['shards']}; new tags: AP "
            f"{record['new_tags_ap']:.4f} over {record['new_tags']} tags on the validation "
            "split" + (f", {record['new_tags_ap_held_out']:.4f} over "
                       f"{record['new_tags_held_out']} tags on the held-out set"
                       if record.get("new_tags_held_out") else ""))
