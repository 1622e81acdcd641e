"""A disk that fills up at an exact write, for the full-disk tests (no tmpfs, no root).

    disk = FullDisk(monkeypatch, name="00001.tar", after=3)   # the 4th write to it fails
    ...                                                       # the command stops: ENOSPC
    disk.free()                                               # space freed: writes succeed

Every file opened for writing from Python (``open``, ``Path.open``, ``tarfile``) whose name
contains ``name`` is wrapped; its writes count, and once ``after`` of them have succeeded
every further write (to any wrapped file, and every ``pyarrow.parquet.write_table`` and
``ParquetWriter`` write or close, which write from C++) raises ``OSError(ENOSPC)`` without a
file name, as a real ``write(2)`` on a full disk does, until :meth:`free`.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import tarfile

import pyarrow.parquet as pq


class FullDisk:
    def __init__(self, monkeypatch, name: str, after: int = 0, code: int = errno.ENOSPC):
        self.name, self.left, self.code, self.full, self.failures = name, after, code, False, 0
        real_open = builtins.open

        def fake_open(file, mode="r", *args, **kwargs):
            fh = real_open(file, mode, *args, **kwargs)
            writing = any(c in mode for c in "wax+")
            if writing and isinstance(file, str | bytes | os.PathLike) \
                    and self.name in os.fsdecode(file):
                return _Wrapped(fh, self)
            return fh

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(tarfile, "bltn_open", fake_open)
        for owner, attr in ((pq, "write_table"), (pq.ParquetWriter, "write_table"),
                            (pq.ParquetWriter, "close")):
            monkeypatch.setattr(owner, attr, self._guard(getattr(owner, attr)))

    def _guard(self, real):
        def guarded(*args, **kwargs):
            if self.full:
                self._fail()
            return real(*args, **kwargs)
        return guarded

    def _fail(self):
        self.failures += 1
        raise OSError(self.code, os.strerror(self.code))

    def write(self) -> None:
        """One write to a wrapped file: it fails once `after` writes have succeeded."""
        if self.full or self.left <= 0:
            self.full = True
            self._fail()
        self.left -= 1

    def free(self) -> None:
        self.full, self.left = False, float("inf")


class _Wrapped:
    """A file object whose writes go through the FullDisk first."""

    def __init__(self, fh, disk: FullDisk):
        self._fh, self._disk = fh, disk

    def write(self, data):
        self._disk.write()
        return self._fh.write(data)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __iter__(self):
        return iter(self._fh)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()
