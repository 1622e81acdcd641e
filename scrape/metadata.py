"""Posts metadata as parquet parts: rows are buffered and flushed as new, immutable parts.

Schema: docs/DESIGN.md, "Boundary 1: scrape output (raw/)". A part is written to a temporary
name and renamed, then registered in the archive; parts are never rewritten. pyarrow loads on
first use (`schema()`, a flush), not at import: a scrape's first request need not wait for it.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from cli_kit.disk_full import writing

from .archive import Archive
from .post import CATEGORIES, Post

if TYPE_CHECKING:
    import pyarrow as pa


@cache
def schema() -> pa.Schema:
    """The posts parquet schema, built on first use
    (docs/DESIGN.md, "Boundary 1: scrape output (raw/)")."""
    import pyarrow as pa
    tags = pa.list_(pa.string())
    return pa.schema([
        ("site", pa.string()), ("id", pa.int64()), ("md5", pa.string()),
        ("file_ext", pa.string()), ("file_url", pa.string()), ("source", pa.string()),
        ("rating", pa.string()), ("score", pa.int64()), ("width", pa.int64()),
        ("height", pa.int64()), ("file_size", pa.int64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("parent_id", pa.int64()), ("has_children", pa.bool_()), ("tags", tags),
        *[(f"tags_{c}", tags) for c in CATEGORIES],
        ("image_path", pa.string()), ("status", pa.string()), ("error", pa.string()),
        # variant: which file image_path holds (original | sample); scraped_at: when this row
        # was written. A post may have several rows (a retry, an original after a sample): the
        # latest scraped_at is the one that counts.
        ("variant", pa.string()), ("scraped_at", pa.timestamp("us", tz="UTC")),
    ])


def _load_arrow() -> None:
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401
    pa.array([0])           # the first array from Python objects imports pandas (~0.5 s)
    schema()


def row(post: Post, status: str, image_path: str | None = None, error: str | None = None,
        file_ext: str | None = None, file_url: str | None = None,
        variant: str | None = None) -> dict:
    """One parquet row for a post and what happened to it, stamped with the time now."""
    cats = post.categories
    return {
        "site": post.site, "id": post.id, "md5": post.md5,
        "file_ext": file_ext or post.file_ext, "file_url": file_url or post.file_url,
        "source": post.source, "rating": post.rating, "score": post.score,
        "width": post.width, "height": post.height, "file_size": post.file_size,
        "created_at": post.created_at, "parent_id": post.parent_id,
        "has_children": post.has_children, "tags": post.tags,
        **{f"tags_{c}": (cats.get(c, []) if cats is not None else None) for c in CATEGORIES},
        "image_path": image_path, "status": status, "error": error,
        "variant": variant if image_path else None, "scraped_at": datetime.now(UTC),
    }


class PartWriter:
    """Buffers rows; `maybe_flush()` writes a part every `rows` rows or `seconds` seconds."""

    def __init__(self, raw: Path, archive: Archive, rows: int = 2000, seconds: float = 30.0):
        self.dir = raw / "posts"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.archive = archive
        self.max_rows = rows
        self.max_seconds = seconds
        self.buffer: list[dict] = []
        self.pending: set[tuple[str, int]] = set()
        self._last = time.monotonic()
        self.parts = 0
        self._arrow: asyncio.Task | None = None

    def preload(self) -> None:
        """Load pyarrow on a thread while the network works (once; on the running loop)."""
        if self._arrow is None:
            self._arrow = asyncio.ensure_future(asyncio.to_thread(_load_arrow))

    def add(self, r: dict) -> None:
        self.buffer.append(r)
        self.pending.add((r["site"], r["id"]))

    def holds(self, site: str, post_id: int) -> bool:
        return (site, post_id) in self.pending

    async def maybe_flush(self) -> None:
        if len(self.buffer) >= self.max_rows or (
                self.buffer and time.monotonic() - self._last >= self.max_seconds):
            await self.flush()

    async def flush(self) -> None:
        if self._arrow is not None:
            await self._arrow
        rows, self.buffer = self.buffer, []
        self._last = time.monotonic()
        if not rows:
            return
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        await asyncio.to_thread(self._write, rows, name)
        self.archive.record(name, rows)
        self.pending -= {(r["site"], r["id"]) for r in rows}
        self.parts += 1

    def _write(self, rows: list[dict], name: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        tmp = self.dir / f".{name}.tmp"
        try:
            with writing(self.dir / name):
                pq.write_table(pa.Table.from_pylist(rows, schema=schema()), tmp)
            os.replace(tmp, self.dir / name)
        finally:
            tmp.unlink(missing_ok=True)
