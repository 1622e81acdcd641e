"""Files that appear whole or not at all: write a temporary name, fsync, rename.

    with atomic_write(path) as fh:        # binary file object; text with mode="w"
        fh.write(data)
    write_bytes_atomic(path, data)        # the same for bytes already in memory
    write_json_atomic(path, value)        # indented UTF-8 JSON
    publish(temporary_name(path), path)   # a file a library wrote under a name of its own

The temporary file is a hidden sibling (``.<name>.<pid>.tmp``, never matched by ``*.tar`` or
``*.csv``), flushed and fsynced before ``os.replace``; the directory is fsynced after it, so a
crash leaves the old file or the new one, never a torn one. A failure deletes the temporary
file; a full disk (ENOSPC) is raised naming ``path`` (scrape/disk_full.py). prep and train
import this module; scrape, which must not know shards, keeps its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cli_kit.disk_full import writing


def temporary_name(path: Path) -> Path:
    """Where ``path`` is written before the rename (hidden, unique to this process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a closed file's data to disk."""
    with path.open("rb+") as fh:
        os.fsync(fh.fileno())


def publish(tmp: Path, path: Path) -> None:
    """Move ``tmp``, a finished file that a library wrote by name (an ONNX exporter, say), to
    ``path``: fsync it, rename it, fsync the directory."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


@contextmanager
def atomic_write(path: Path, mode: str = "wb", durable: bool = True) -> Iterator[IO[Any]]:
    """A file object for ``path`` that replaces it only when the block ends without error.

    ``mode`` is ``"wb"`` or ``"w"`` (UTF-8, ``newline=""``). With ``durable`` the data and the
    rename are fsynced (off for files as cheap to redo as a caption).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    tmp = temporary_name(path)
    text = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
    try:
        with writing(path), open(tmp, mode, **text) as fh:   # a full disk names `path`
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, "wb", durable) as fh:
        fh.write(data)


def write_text_atomic(path: Path, text: str, durable: bool = True) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    write_bytes_atomic(path, text.encode("utf-8"), durable)


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as indented UTF-8 JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")
