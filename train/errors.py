"""Exceptions of the train stage: `TrainError` is anything the user can fix (one line, exit 2)."""

from __future__ import annotations


class TrainError(Exception):
    """Base class of every expected, user-facing training error."""


class WeightsError(TrainError):
    """Pretrained weights cannot be loaded (offline, missing file, shapes that do not fit)."""


class DataError(TrainError):
    """The shards cannot be read or do not fit the run (no manifest, no samples, no labels)."""


class ScoresError(TrainError, ValueError):
    """Scores no metric can rank: NaN from a model that diverged."""
