"""Exceptions raised by the prep stage.

Every error a user can fix (a bad path, a missing column, an empty input, a bad option value)
is a :class:`PrepError`; ``prep.cli.main`` turns it into a one-line message and exit code 2.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PrepError(Exception):
    """Base class of every expected, user-facing prep error."""


class InputError(PrepError):
    """An input path is missing, has an unsupported format, or cannot be parsed."""


class MissingColumnError(InputError):
    """An input file lacks a column the requested operation needs."""


class EmptyInputError(InputError):
    """The inputs hold no posts, or no post passes the post filters."""


class SettingsError(PrepError):
    """An option value is invalid (unknown category name, unreadable exclude file, ...)."""


class NothingSelectedError(PrepError):
    """The filters left no tag to put in the index."""
