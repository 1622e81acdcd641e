"""A full disk, said in one line by every command, with exit code 1.

    with writing(path):                  # an ENOSPC in the block names `path`
        fh.write(data)
    found = no_space(exc)                # the ENOSPC somewhere in an error's chain, or None
    print(no_space_line("tag", found))   # tag: no space left on device writing out.parquet; ...

``run_main`` (cli_kit/command_line.py) turns any error that is, or was caused by, a full disk
into that line and exit code 1, whatever else went wrong after it (a writer that fails again
while closing, an error raised while handling it); the commands remove their temporary files
on the way out, so the same command run again after space is freed finishes the job. It lives
in cli_kit, the package every other one may import (shards' atomic writers use it too), and
needs nothing but the standard library.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

EXIT_CODE = 1
AGAIN = "free some space and run the same command again to finish"
_TEXTS = ("no space left on device", "errno 28", "database or disk is full",
          "disk quota exceeded")


def _is_no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return any(t in text for t in _TEXTS)


def no_space(exc: BaseException) -> BaseException | None:
    """The full-disk error in ``exc``, its causes, contexts and exception groups (one naming a
    file first), or None when the disk was not full."""
    found: list[BaseException] = []
    stack, seen = [exc], set()
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if _is_no_space(e):
            found.append(e)
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        stack.extend((e.__cause__, e.__context__))
    named = [e for e in found if isinstance(e, OSError) and e.filename]
    return (named or found or [None])[0]


def no_space_line(prog: str, exc: BaseException, again: str = AGAIN) -> str:
    """``PROG: no space left on device writing PATH; free some space and run the same command
    again to finish`` (the error's own words when it names no file; ``again`` says how to go
    on)."""
    path = exc.filename if isinstance(exc, OSError) else None
    where = f"writing {os.fsdecode(path)}" if path else f"({exc})"
    return f"{prog}: no space left on device {where}; {again}"


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Give a full-disk error raised in the block (often by a ``write`` that knows no file
    name, or wrapped by a library, as torch.save wraps it in a RuntimeError) the name
    ``path``; other errors pass unchanged."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, OSError) and exc.filename or no_space(exc) is None:
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(path))) from exc
