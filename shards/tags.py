"""The tag index file, ``tags.csv``: one strict reader, one writer
(docs/DESIGN.md, "Boundary 2: tag index (tags.csv)").

The format of the WD taggers' ``selected_tags.csv``: header ``tag_id,name,category,count``;
row *i* is model output *i*. ``prep make-tag-index`` writes it, ``make-shards`` copies it beside
the shards, ``train`` copies it into the run and ``tag`` reads the run's copy, all through here.

    rows = read_tags("shards/tags.csv")     # or an http(s):// URL; [{"tag_id", "name", ...}]
    write_tags(Path("run/tags.csv"), rows)  # atomically
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .atomic import write_bytes_atomic
from .errors import TagsError

CSV_HEADER = ("tag_id", "name", "category", "count")


def parse_tags(text: str, source: str) -> list[dict[str, Any]]:
    """The rows of a ``tags.csv`` text as dicts (int ``tag_id``, ``category``, ``count``).

    Raises TagsError for another header, a row without four fields or with a non-integer
    number, a repeated name, or no rows at all.
    """
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(h.strip() for h in rows[0]) != CSV_HEADER:
        raise TagsError(f"{source}: not a tag index (expected the header "
                        f"{','.join(CSV_HEADER)})")
    out: list[dict[str, Any]] = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            tag_id, name, category, count = row
            out.append({"tag_id": int(tag_id), "name": name, "category": int(category),
                        "count": int(count)})
        except ValueError:
            raise TagsError(f"{source}:{lineno}: expected tag_id,name,category,count "
                            "(three integers and a name)") from None
    repeated = sorted(n for n, k in Counter(r["name"] for r in out).items() if k > 1)
    if repeated:
        raise TagsError(f"{source}: repeated names in the tag index: {', '.join(repeated[:5])}")
    if not out:
        raise TagsError(f"{source}: the tag index has no rows")
    return out


def read_tags_bytes(source: str | Path) -> bytes:
    """The bytes of a ``tags.csv`` at a path or URL. Raises TagsError when unreadable."""
    from .streams import open_stream
    try:
        with open_stream(str(source)) as fh:
            return fh.read()
    except OSError as exc:
        raise TagsError(f"cannot read the tag index {source}: {exc}") from None


def decode_tags(data: bytes, source: str) -> list[dict[str, Any]]:
    """Parse the bytes of a ``tags.csv`` (UTF-8). Raises TagsError."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TagsError(f"cannot read the tag index {source}: {exc}") from None
    return parse_tags(text, source)


def read_tags(source: str | Path) -> list[dict[str, Any]]:
    """The rows of the ``tags.csv`` at a path or URL, in order. Raises TagsError."""
    return decode_tags(read_tags_bytes(source), str(source))


def tags_bytes(rows: Iterable[Mapping[str, Any] | tuple[int, str, int, int]]) -> bytes:
    """A ``tags.csv`` for rows given as dicts or ``(tag_id, name, category, count)`` tuples."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in rows:
        writer.writerow([row[k] for k in CSV_HEADER] if isinstance(row, Mapping) else row)
    return out.getvalue().encode("utf-8")


def write_tags(path: Path, rows: Iterable[Mapping[str, Any] | tuple[int, str, int, int]]) -> None:
    """Write rows (see :func:`tags_bytes`) to ``path`` atomically."""
    write_bytes_atomic(Path(path), tags_bytes(rows))
