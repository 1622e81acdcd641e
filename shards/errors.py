"""Exceptions raised by the shards library."""

from __future__ import annotations


class ShardsError(Exception):
    """Base class of the expected errors of this package."""


class ManifestError(ShardsError):
    """A manifest is missing, unreadable, of another format or version, or incomplete."""


class TagsError(ShardsError):
    """A tag index (``tags.csv``) is missing, unreadable or malformed."""


class LabelsError(ShardsError):
    """A sample's recorded labels (``label_ids``) are missing or malformed."""
