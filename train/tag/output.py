"""The tables `tag` writes, streamed batch by batch and renamed into place when complete.

    --output tags.parquet|.csv|.jsonl   one row per image: path, tags, scores, error
    --embed vectors.parquet             one row per image read: path, embedding list<float32>

`tags` are the selected labels best first and `scores` their probabilities; an image that
could not be read has empty lists and its reason in `error`. In CSV the lists are joined with
", " (as in a caption file). A table appears under its name only once every image is done.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cli_kit.disk_full import writing
from shards.atomic import fsync_dir, fsync_file, temporary_name

from ..errors import TrainError

TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl")
TAG_SCHEMA = pa.schema([("path", pa.string()), ("tags", pa.list_(pa.string())),
                        ("scores", pa.list_(pa.float32())), ("error", pa.string())])
EMBED_SCHEMA = pa.schema([("path", pa.string()), ("embedding", pa.list_(pa.float32()))])


def check_table_path(path: Path, flag: str, suffixes=TABLE_SUFFIXES) -> None:
    """Raise TrainError when `path` has no known suffix or its folder does not exist."""
    if path.suffix.lower() not in suffixes:
        raise TrainError(f"{flag} {path}: the name must end in {' or '.join(suffixes)}")
    if not path.parent.is_dir():
        raise TrainError(f"{flag} {path}: the folder {path.parent} does not exist")


class _Atomic:
    """A table written to a temporary name and renamed when complete (shards.atomic)."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = temporary_name(path)

    def _finish(self) -> None:
        fsync_file(self.tmp)
        self.tmp.replace(self.path)
        fsync_dir(self.path.parent)

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


class TagTable(_Atomic):
    """Rows of (path, tags, scores, error) in parquet, CSV or JSON lines by the file suffix."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.kind = path.suffix.lower().lstrip(".")
        self.rows = 0
        if self.kind == "parquet":
            self._writer = pq.ParquetWriter(str(self.tmp), TAG_SCHEMA)
        else:
            self._file = self.tmp.open("w", newline="", encoding="utf-8")
            if self.kind == "csv":
                self._csv = csv.writer(self._file)
                self._csv.writerow(TAG_SCHEMA.names)

    def write(self, rows: list[dict]) -> None:
        """rows: {"path": str, "tags": [str], "scores": [float], "error": str | None}."""
        with writing(self.path):
            self._write(rows)

    def _write(self, rows: list[dict]) -> None:
        self.rows += len(rows)
        if self.kind == "parquet":
            self._writer.write_table(pa.Table.from_pylist(rows, schema=TAG_SCHEMA))
        elif self.kind == "csv":
            for r in rows:
                self._csv.writerow([r["path"], ", ".join(r["tags"]),
                                    ", ".join(f"{s:.4f}" for s in r["scores"]),
                                    r["error"] or ""])
        else:
            for r in rows:
                self._file.write(json.dumps({**r, "scores": [round(s, 6) for s in r["scores"]]},
                                            ensure_ascii=False) + "\n")

    def close(self) -> None:
        with writing(self.path):
            if self.kind == "parquet":
                self._writer.close()
            else:
                self._file.close()
            self._finish()

    def abort(self) -> None:
        try:
            if self.kind == "parquet":
                self._writer.close()
            else:
                self._file.close()
        finally:
            super().abort()


class EmbeddingTable(_Atomic):
    """Rows of (path, embedding list<float32>) in parquet."""

    def __init__(self, path: Path):
        super().__init__(path)
        self._writer = pq.ParquetWriter(str(self.tmp), EMBED_SCHEMA)

    def write(self, paths: list[str], vectors: np.ndarray) -> None:
        with writing(self.path):
            self._write(paths, vectors)

    def _write(self, paths: list[str], vectors: np.ndarray) -> None:
        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel())
        offsets = pa.array(np.arange(len(paths) + 1, dtype=np.int32) * vectors.shape[1])
        column = pa.ListArray.from_arrays(offsets, flat)
        self._writer.write_table(pa.Table.from_arrays([pa.array(paths, pa.string()), column],
                                                      schema=EMBED_SCHEMA))

    def close(self) -> None:
        with writing(self.path):
            self._writer.close()
            self._finish()

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            super().abort()
