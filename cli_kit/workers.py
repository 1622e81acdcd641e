"""One rule for ``--workers`` in every command and its library counterpart.

    --workers N      N worker processes (or reader threads); 0 = in the main process
    --workers auto   the default: one per CPU this process may run on, at most the use's cap

The CPUs are those of the process's affinity (``os.sched_getaffinity``: a container or
``taskset`` limit counts, the machine's total does not), so a default never starts more
workers than torch's DataLoader suggests. Library settings take ``None`` for ``auto`` and
``0`` for the main process, as the flags do:

    parser.add_argument("--workers", **workers_argument("data loading processes", LOADER_CAP))
    count = resolve_workers(settings.workers, LOADER_CAP)   # None -> the default

The caps, by use: ``LOADER_CAP`` for DataLoader processes; none for prep's image processes
and tag-index reader threads (CPU-bound work that scales with every core).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

AUTO = "auto"
LOADER_CAP = 8   # DataLoader decoding processes (train, tag, tag review): more rarely feed
                 # one device faster, and each holds a prefetch queue of batches


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), else the machine's count, at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):           # not on Linux
        return os.cpu_count() or 1


def default_workers(cap: int | None = None, share: int = 1) -> int:
    """The default number of workers: one per available CPU, divided among ``share``
    processes of the same machine (e.g. training ranks), at most ``cap``, at least 1."""
    count = max(1, available_cpus() // max(1, share))
    return count if cap is None else max(1, min(cap, count))


def resolve_workers(workers: int | None, cap: int | None = None, share: int = 1) -> int:
    """``workers`` as given (0 = in the main process), or the default when it is ``None``."""
    if workers is None:
        return default_workers(cap, share)
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, not {workers}")
    return workers


def workers_type(cap: int | None = None, share: int = 1) -> Callable[[str], int]:
    """The argparse ``type`` of ``--workers``: ``auto`` (the default for this cap) or N >= 0."""
    def parse(text: str) -> int:
        if text == AUTO:
            return default_workers(cap, share)
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
        return value

    parse.__name__ = "workers"   # argparse names the type in its messages
    return parse


def workers_help(what: str, cap: int | None = None, share: int = 1) -> str:
    """The help of ``--workers``: what they are, what 0 means, and the effective default."""
    limit = "" if cap is None else f", at most {cap}"
    per = "" if share == 1 else f" shared by {share} processes"
    return (f"{what}; 0 = in the main process (default: auto = one per CPU{per}{limit}: "
            f"{default_workers(cap, share)} here)")


def workers_argument(what: str, cap: int | None = None, share: int = 1) -> dict[str, Any]:
    """Keyword arguments of ``add_argument("--workers", ...)`` under the one rule; the default
    is the resolved count, so ``args.workers`` is always an int."""
    return {"type": workers_type(cap, share), "default": default_workers(cap, share),
            "metavar": "auto|N", "help": workers_help(what, cap, share)}
