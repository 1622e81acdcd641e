"""The resume and dedupe state of a `raw/` folder: SQLite, next to the parquet parts.

The `posts` table holds each post's latest row (by `scraped_at`): its status, md5, image and
which variant the image is. A post counts as done when its latest row is in a parquet part
*and* the part is registered here. Parts are registered in the same transaction as their posts;
a part that reached the disk but not this table (a kill -9 between the two) is found and
registered at the next start, so a rerun never writes a post twice and never loses one.
A later row of a post (a `--retry-failed` run, an original over a sample) supersedes the
earlier one here, as it does for every reader of the parquet parts.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
COLUMNS = ("site", "id", "status", "md5", "image_path", "variant", "scraped_at")


@dataclass(frozen=True)
class Latest:
    """A post's latest row, as far as resuming needs it."""

    status: str
    variant: str | None
    image_path: str | None


class Archive:
    def __init__(self, raw: Path):
        self.path = raw / "state.sqlite"
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS posts (site TEXT, id INTEGER, status TEXT, md5 TEXT,
                image_path TEXT, variant TEXT, scraped_at TEXT, PRIMARY KEY (site, id));
            CREATE INDEX IF NOT EXISTS posts_md5 ON posts (md5);
            CREATE TABLE IF NOT EXISTS parts (name TEXT PRIMARY KEY);
        """)
        have = {r[1] for r in self.db.execute("PRAGMA table_info(posts)")}
        for column in ("variant", "scraped_at"):        # a raw/ from before these columns
            if column not in have:
                self.db.execute(f"ALTER TABLE posts ADD COLUMN {column} TEXT")
        self.db.commit()

    def reconcile(self, posts_dir: Path) -> int:
        """Register parts on disk that the table does not know; returns how many."""
        known = {r[0] for r in self.db.execute("SELECT name FROM parts")}
        added = 0
        for part in sorted(posts_dir.glob("*.parquet")):
            if part.name in known:
                continue
            import pyarrow.parquet as pq  # only a resumed run has parts to register
            names = pq.read_schema(part).names
            table = pq.read_table(part, columns=[c for c in COLUMNS if c in names])
            self.record(part.name, table.to_pylist())
            added += 1
        if added:
            log.info("registered %d parquet part(s) written by an interrupted run", added)
        return added

    def latest(self, site: str, post_id: int) -> Latest | None:
        """The post's latest recorded row, or None when no finished run wrote one."""
        found = self.db.execute("SELECT status, variant, image_path FROM posts WHERE site=? "
                                "AND id=?", (site, post_id)).fetchone()
        return Latest(*found) if found else None

    def image_for(self, md5: str, variant: str = "original") -> str | None:
        """A stored image of this md5 and variant (a row without a variant is an original)."""
        row = self.db.execute("SELECT image_path FROM posts WHERE md5=? AND image_path IS NOT "
                              "NULL AND coalesce(variant, 'original')=? LIMIT 1", (md5, variant))
        found = row.fetchone()
        return found[0] if found else None

    def used_by_other(self, image_path: str, site: str, post_id: int) -> bool:
        """Whether a post other than this one still points at `image_path`."""
        return self.db.execute("SELECT 1 FROM posts WHERE image_path=? AND NOT (site=? AND "
                               "id=?) LIMIT 1", (image_path, site, post_id)).fetchone() is not None

    def record(self, part: str, rows: list[dict]) -> None:
        """Register a part and its rows; a row replaces a post's older one, never a newer."""
        values = [(r["site"], r["id"], r["status"], r["md5"], r["image_path"], r.get("variant"),
                   _stamp(r.get("scraped_at"))) for r in rows]
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO parts VALUES (?)", (part,))
            self.db.executemany(
                "INSERT INTO posts VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, id) DO UPDATE "
                "SET status=excluded.status, md5=excluded.md5, image_path=excluded.image_path, "
                "variant=excluded.variant, scraped_at=excluded.scraped_at "
                "WHERE coalesce(excluded.scraped_at, '') >= coalesce(posts.scraped_at, '')",
                values)

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM posts GROUP BY status"))

    def close(self) -> None:
        self.db.close()


def _stamp(value) -> str | None:
    """A sortable text form of a row's scraped_at (None for rows written before it existed)."""
    return value.isoformat(timespec="microseconds") if value is not None else None
