"""The run's label space: `tags.csv` in the WD-tagger format (tag_id,name,category,count)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from .errors import DataError
from .remote import open_stream

FIELDS = ("tag_id", "name", "category", "count")


def read_tags(source: str | Path) -> list[dict]:
    """Rows of a tags.csv from a path or URL; row i is model output i."""
    try:
        with open_stream(str(source)) as f:
            text = f.read().decode("utf-8")
    except OSError as exc:
        raise DataError(f"cannot read the tag index {source}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "name" not in reader.fieldnames:
        raise DataError(f"{source}: not a tags.csv (header tag_id,name,category,count)")
    rows = [{"tag_id": int(r.get("tag_id") or -1), "name": r["name"],
             "category": int(r.get("category") or 0), "count": int(r.get("count") or 0)}
            for r in reader]
    if not rows:
        raise DataError(f"{source}: the tag index is empty")
    return rows


def write_tags(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in FIELDS} for r in rows)
    tmp.replace(path)
