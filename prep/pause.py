"""Pause points: hold a build at an exact item, so that a test kills it exactly there.

Outside the tests this does nothing: :func:`pause_point` returns at once unless the environment
variable ``BOORU_TAGGER_PAUSE_DIR`` names a folder. A test arms a point by writing
``DIR/<name>.arm`` holding a count N; the N-th time one process reaches ``pause_point(name)``
it claims the arm (a rename, so exactly one process pauses), writes its pid to
``DIR/<name>.paused`` and waits until it is killed. The test waits for that file instead of
racing the build with a poll loop. The points: ``stage-part`` (a first-pass stage part is
written), ``shard-done`` (a shard of the local engine is written), ``shard-uploaded`` (a
shard's objects are in the bucket), ``task-sample`` (a Ray task wrote a sample).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "BOORU_TAGGER_PAUSE_DIR"
_reached: Counter[str] = Counter()


def pause_point(name: str) -> None:
    """Wait forever here when a test armed ``name`` for this call (see the module docstring)."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    _reached[name] += 1
    arm = Path(folder) / f"{name}.arm"
    try:
        count = int(arm.read_text())
    except (OSError, ValueError):
        return
    if _reached[name] < count:
        return
    try:  # atomic: of the processes that get here, one claims the arm
        os.rename(arm, Path(folder) / f"{name}.claimed.{os.getpid()}")
    except OSError:
        return
    paused = Path(folder) / f"{name}.paused"
    tmp = Path(folder) / f".{name}.paused.{os.getpid()}"
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, paused)
    log.warning("paused at %s (call %d) for a test; waiting to be killed", name, _reached[name])
    threading.Event().wait()
