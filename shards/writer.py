"""Write one shard: ``NNNNN.tar`` + ``NNNNN.parquet``, then ``NNNNN_stats.json`` last.

    with ShardWriter(root / "train", "00000", image_ext="jpg") as writer:
        writer.write({"__key__": "danbooru_1", "jpg": data, "json": meta})
        writer.write({"__key__": "danbooru_2", "json": meta, "status": "failed_corrupt",
                      "error_message": "cannot decode: ..."})
    writer.stats  # what went into NNNNN_stats.json

A sample is a dict: ``__key__`` (see :func:`.format.check_key`), ``json`` (metadata dict,
stored as ``<key>.json`` and the source of the parquet row's columns), ``status`` (default
``success``), ``error_message``, and for a success the encoded image under ``image_ext``.
Failed samples get a parquet row and no tar members.

The tar and the parquet are written under hidden temporary names and renamed when the writer
closes; the stats file comes last, so a shard under its final names is always complete. Tar
members are byte-for-byte reproducible: fixed mtime, uid/gid 0, no user names, mode 0444,
USTAR format, members of a sample in sorted extension order (as webdataset's TarWriter).
Leaving the ``with`` block through an exception deletes the temporary files.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cli_kit.disk_full import writing

from .atomic import fsync_dir, fsync_file, write_json_atomic
from .format import IMAGE_EXTS, PARQUET_SCHEMA, SUCCESS, ShardPaths, check_key

FIXED_MTIME = 1_577_836_800  # 2020-01-01T00:00:00Z on every member: reproducible tars
TOP_ERRORS = 20  # distinct error messages kept in the stats file


def _json_bytes(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class ShardWriter:
    """Context manager writing one shard atomically; see the module docstring."""

    def __init__(self, directory: Path, name: str, image_ext: str = "jpg",
                 extra_stats: dict[str, Any] | None = None):
        if image_ext not in IMAGE_EXTS:
            raise ValueError(f"image_ext must be one of {IMAGE_EXTS}, got {image_ext!r}")
        self.directory = Path(directory)
        self.name = name
        self.image_ext = image_ext
        self.paths = ShardPaths.of(self.directory, name)
        self.extra_stats = dict(extra_stats or {})
        self.stats: dict[str, Any] | None = None
        self._rows: list[dict[str, Any]] = []
        self._keys: set[str] = set()
        self._status: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._image_bytes = 0
        self._started = time.time()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.paths.stats.unlink(missing_ok=True)  # a shard being rewritten is not done
        self._tar_tmp = self.paths.temporary(self.paths.tar)
        self._tar = tarfile.open(  # noqa: SIM115 (closed by close() or abort())
            self._tar_tmp, "w", format=tarfile.USTAR_FORMAT)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, sample: dict[str, Any]) -> None:
        """Add one sample. Raises ValueError for a bad or repeated key or a missing field."""
        key = sample.get("__key__")
        check_key(key)
        if key in self._keys:
            raise ValueError(f"duplicate key {key!r} in shard {self.name}")
        meta = sample.get("json")
        if not isinstance(meta, dict):
            raise ValueError(f"sample {key}: 'json' must be a dict of metadata")
        status = sample.get("status", SUCCESS)
        if status == SUCCESS:
            data = sample.get(self.image_ext)
            if not isinstance(data, bytes | bytearray) or not data:
                raise ValueError(f"sample {key}: a success needs '{self.image_ext}' bytes")
            members = {self.image_ext: bytes(data), "json": _json_bytes(meta)}
            with writing(self.paths.tar):                # a full disk names the shard
                for ext in sorted(members):
                    self._add_member(f"{key}.{ext}", members[ext])
            self._image_bytes += len(data)
        else:
            self._errors[str(sample.get("error_message"))] += 1
        self._keys.add(key)
        self._status[status] += 1
        row = {column: meta.get(column) for column in PARQUET_SCHEMA.names}
        row.update(key=key, status=status, error_message=sample.get("error_message"))
        self._rows.append(row)

    def _add_member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = FIXED_MTIME
        info.mode = 0o444
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> dict[str, Any]:
        """Finish the shard: rename tar and parquet into place, then write the stats file."""
        if self.stats is not None:
            return self.stats
        parquet_tmp = self.paths.temporary(self.paths.parquet)
        try:
            with writing(self.paths.tar):
                self._tar.close()
                fsync_file(self._tar_tmp)
            table = pa.Table.from_pylist(self._rows, schema=PARQUET_SCHEMA)
            with writing(self.paths.parquet):
                pq.write_table(table, parquet_tmp)
                fsync_file(parquet_tmp)
            os.replace(self._tar_tmp, self.paths.tar)
            os.replace(parquet_tmp, self.paths.parquet)
            fsync_dir(self.directory)
        except BaseException:
            self._tar_tmp.unlink(missing_ok=True)
            parquet_tmp.unlink(missing_ok=True)
            raise
        ended = time.time()
        successes = self._status[SUCCESS]
        stats = {
            "name": self.name,
            "count": len(self._rows),
            "successes": successes,
            "failed": len(self._rows) - successes,
            "status": dict(sorted(self._status.items())),
            "errors": dict(self._errors.most_common(TOP_ERRORS)),
            "image_bytes": self._image_bytes,
            "tar_bytes": self.paths.tar.stat().st_size,
            "parquet_bytes": self.paths.parquet.stat().st_size,
            **self.extra_stats,
            "start_time": round(self._started, 3),
            "end_time": round(ended, 3),
            "duration": round(ended - self._started, 3),
        }
        write_json_atomic(self.paths.stats, stats)
        self.stats = stats
        return stats

    def abort(self) -> None:
        """Drop the shard: close and delete the temporary files; final names are untouched."""
        with contextlib.suppress(OSError, tarfile.TarError):
            self._tar.close()
        self._tar_tmp.unlink(missing_ok=True)
        self.paths.temporary(self.paths.parquet).unlink(missing_ok=True)

