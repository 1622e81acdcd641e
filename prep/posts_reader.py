"""Find posts files and stream them as Arrow record batches.

An input path (``--posts``) may be:

- a scrape output directory such as ``raw/``: every ``raw/posts/*.parquet`` part is read;
- any other directory: every ``*.parquet``, ``*.jsonl``, ``*.ndjson`` (``.gz`` too) in it;
- one parquet file, or one JSON-lines file (``.jsonl``, ``.ndjson``, ``.json``, optionally
  ``.gz``), for instance a metadata dump of a booru with a ``tags`` column.

Reading is split into :class:`ReadUnit` s (one parquet row group, or one JSON-lines file) so that
callers can process units in parallel, and each unit is read in record batches of at most
``batch_size`` rows: memory is bounded by the batch size, never by the number of posts.

A post may have several rows in ``raw/posts`` (``scrape --retry-failed``, an original after a
sample): only its latest row, by ``scraped_at``, is read; the others are dropped on reading.

Tag columns may hold lists of strings (the posts parquet of ``scrape``) or one space-separated
string per post (common in booru dumps); :func:`tag_lists` turns either into ``list<string>``.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from .errors import EmptyInputError, InputError, MissingColumnError

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet",)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")
# A single file named *.json is read as JSON lines too; in a directory it is more likely state.
JSONL_FILE_SUFFIXES = (*JSONL_SUFFIXES, ".json", ".json.gz")
LIST_STRING = pa.list_(pa.string())
_JSON_BLOCK_BYTES = 8 << 20
_JSON_PEEK_LINES = 1000


@dataclass(frozen=True)
class ReadUnit:
    """One independently readable piece of input.

    ``columns`` are the requested columns this file actually has; ``num_rows`` is known for
    parquet (from the footer) and ``None`` for JSON lines.
    """

    path: Path
    fmt: str  # "parquet" or "jsonl"
    row_group: int | None
    num_rows: int | None
    columns: tuple[str, ...]
    json_schema: pa.Schema | None = None
    # (site, id, scraped_at in µs or None) of rows a later row of the same post supersedes
    superseded: frozenset = frozenset()


def _format_of(path: Path, suffixes_jsonl: Sequence[str]) -> str | None:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(tuple(suffixes_jsonl)):
        return "jsonl"
    return None


def find_post_files(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """Expand input paths into ``(file, format)`` pairs, sorted by name within a directory.

    Raises InputError for a path that does not exist or a file of unknown format, and
    EmptyInputError when no posts file is found at all.
    """
    found: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            root = path / "posts" if (path / "posts").is_dir() else path
            files = sorted(p for p in root.iterdir() if p.is_file())
            found += [(p, f) for p in files if (f := _format_of(p, JSONL_SUFFIXES))]
        elif path.is_file():
            fmt = _format_of(path, JSONL_FILE_SUFFIXES)
            if fmt is None:
                raise InputError(
                    f"{path}: unsupported file type (expected .parquet, or JSON lines: "
                    f"{', '.join(JSONL_FILE_SUFFIXES)})"
                )
            found.append((path, fmt))
        else:
            raise InputError(f"{path}: no such file or directory")
    if not found:
        shown = ", ".join(str(p) for p in paths)
        raise EmptyInputError(
            f"no posts files found in {shown} (looked for posts/*.parquet, *.parquet, *.jsonl)"
        )
    return found


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _jsonl_schema(path: Path, wanted: Sequence[str]) -> pa.Schema:
    """Schema of the wanted columns present in the first lines of a JSON-lines file.

    A tag column is ``list<string>`` when its first non-null value is a JSON list and
    ``string`` (space-separated tags) otherwise; every other column is read as a string.
    """
    seen: dict[str, object] = {}  # column -> first non-null value (None while only nulls)
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(islice(fh, _JSON_PEEK_LINES), start=1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise InputError(f"{path}:{lineno}: expected one JSON object per line")
                for name in wanted:
                    if name in record and seen.get(name) is None:
                        seen[name] = record[name]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON-lines file ({exc})") from exc
    return pa.schema([pa.field(n, _json_type(n, v)) for n, v in seen.items()])


def _json_type(name: str, value: object) -> pa.DataType:
    if name.startswith("tags") and not isinstance(value, str):
        return LIST_STRING
    return pa.string()


def plan_units(
    paths: Sequence[Path], wanted: Sequence[str], required: Sequence[str]
) -> list[ReadUnit]:
    """Split the inputs into read units, checking that each file has the required columns.

    ``wanted`` lists every column the caller can use; ``required`` the ones it cannot do without.
    Raises InputError (unreadable file), MissingColumnError, EmptyInputError (no files).
    """
    units: list[ReadUnit] = []
    for path, fmt in find_post_files(paths):
        if fmt == "parquet":
            try:
                meta = pq.ParquetFile(path)
            except (pa.ArrowException, OSError) as exc:
                raise InputError(f"{path}: not a readable parquet file ({exc})") from exc
            names = set(meta.schema_arrow.names)
            schema = None
        else:
            schema = _jsonl_schema(path, wanted)
            names = set(schema.names)
        missing = [c for c in required if c not in names]
        if missing:
            has = ", ".join(sorted(names)) or "no usable columns"
            raise MissingColumnError(
                f"{path}: missing column {', '.join(repr(c) for c in missing)} (has: {has})"
            )
        columns = tuple(c for c in wanted if c in names)
        if fmt == "parquet":
            units += [
                ReadUnit(path, fmt, i, meta.metadata.row_group(i).num_rows, columns)
                for i in range(meta.num_row_groups)
            ]
        else:
            units.append(ReadUnit(path, fmt, None, None, columns, schema))
    superseded = superseded_rows(sorted({u.path for u in units if u.fmt == "parquet"}))
    if superseded:
        units = [replace(u, superseded=superseded) if u.fmt == "parquet" else u for u in units]
    return units


def _key_table(path: Path) -> pa.Table | None:
    names = pq.read_schema(path).names
    if "site" not in names or "id" not in names:
        return None
    has_stamp = "scraped_at" in names
    t = pq.read_table(path, columns=["site", "id", *(["scraped_at"] if has_stamp else [])])
    stamp = _micros(t["scraped_at"]) if has_stamp else pa.nulls(len(t), pa.int64())
    return pa.table({"site": t["site"], "id": t["id"].cast(pa.int64()), "t": stamp})


def _micros(stamps) -> pa.Array:
    return pc.cast(pc.cast(stamps, pa.timestamp("us", tz="UTC")), pa.int64())


def superseded_rows(files: Sequence[Path]) -> frozenset:
    """Keys ``(site, id, scraped_at µs or None)`` of the rows that a later row of the same post
    replaces. Empty (and nothing read) when no file has a ``scraped_at`` column."""
    if not any("scraped_at" in pq.read_schema(f).names for f in files):
        return frozenset()
    tables = [t for t in (_key_table(f) for f in files) if t is not None]
    keys = pa.concat_tables(tables)
    counted = keys.group_by(["site", "id"]).aggregate([("id", "count")])
    repeated = counted.filter(pc.greater(counted["id_count"], 1))
    if repeated.num_rows == 0:
        return frozenset()
    rows = keys.filter(pc.is_in(keys["id"], value_set=repeated["id"])).to_pylist()
    latest: dict[tuple, int] = {}
    for r in rows:
        key = (r["site"], r["id"])
        latest[key] = max(latest.get(key, -1), -1 if r["t"] is None else r["t"])
    return frozenset((r["site"], r["id"], r["t"]) for r in rows
                     if (-1 if r["t"] is None else r["t"]) < latest[(r["site"], r["id"])])


def _drop_superseded(batch: pa.RecordBatch, unit: ReadUnit) -> pa.RecordBatch:
    """The batch without superseded rows, holding only ``unit.columns``."""
    ids = pa.array(sorted({k[1] for k in unit.superseded}), pa.int64())
    suspects = pc.is_in(batch["id"].cast(pa.int64()), value_set=ids).to_numpy(
        zero_copy_only=False)
    keep = np.ones(batch.num_rows, dtype=bool)
    if suspects.any():
        names = batch.schema.names
        stamps = (_micros(batch["scraped_at"]).to_pylist() if "scraped_at" in names
                  else [None] * batch.num_rows)
        sites, post_ids = batch["site"].to_pylist(), batch["id"].to_pylist()
        for i in np.flatnonzero(suspects):
            keep[i] = (sites[i], post_ids[i], stamps[i]) not in unit.superseded
    return batch.filter(pa.array(keep)).select(list(unit.columns))


def iter_batches(unit: ReadUnit, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
    """Yield the unit's rows as record batches holding ``unit.columns``.

    Raises InputError when the file turns out to be corrupt or not what its name says.
    """
    try:
        if unit.fmt == "parquet":
            pf = pq.ParquetFile(unit.path)
            columns = list(unit.columns)
            if unit.superseded:
                present = pf.schema_arrow.names
                columns += [c for c in ("site", "id", "scraped_at")
                            if c in present and c not in columns]
            for batch in pf.iter_batches(
                batch_size=batch_size,
                row_groups=[unit.row_group],
                columns=columns,
                use_threads=False,
            ):
                yield _drop_superseded(batch, unit) if unit.superseded else batch
        else:
            reader = pajson.open_json(
                pa.input_stream(str(unit.path), compression="detect"),
                read_options=pajson.ReadOptions(block_size=_JSON_BLOCK_BYTES),
                parse_options=pajson.ParseOptions(
                    explicit_schema=unit.json_schema, unexpected_field_behavior="ignore"
                ),
            )
            yield from reader
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{unit.path}: cannot read posts ({exc})") from exc


def tag_lists(array: pa.Array) -> pa.Array:
    """Return a tag column as ``list<string>`` without null elements.

    Accepts list/large_list of string-like values, or strings of whitespace-separated tags.
    ``list<null>``, which pyarrow and pandas infer for a column of empty lists, is a column of
    empty lists of strings.
    Raises InputError for any other type.
    """
    kind = array.type
    if pa.types.is_list(kind) and kind.value_type == pa.string():
        lists = array
    elif (
        pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_list_view(kind)
    ) and kind.value_type in (pa.string(), pa.large_string(), pa.string_view(), pa.null()):
        lists = array.cast(LIST_STRING)
    elif kind in (pa.string(), pa.large_string(), pa.string_view()):
        lists = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(array.cast(pa.string())))
        return _drop_values(lists, pc.not_equal(pc.list_flatten(lists), ""))
    elif kind == pa.null():
        return pa.nulls(len(array), LIST_STRING)
    else:
        raise InputError(f"tag column has type {kind}; expected list<string> or string")
    if pc.list_flatten(lists).null_count:
        return _drop_values(lists, pc.is_valid(pc.list_flatten(lists)))
    return lists


def _drop_values(lists: pa.Array, keep: pa.Array) -> pa.Array:
    """Rebuild ``lists`` keeping only the flattened values where ``keep`` is true."""
    values = pc.list_flatten(lists).filter(keep)
    parents = pc.list_parent_indices(lists).filter(keep).to_numpy()
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum(np.bincount(parents, minlength=len(lists)), out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=lists.is_null())
