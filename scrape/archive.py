"""The resume and dedupe state of a `raw/` folder: SQLite, next to the parquet parts.

A post counts as done when its row is in a parquet part *and* the part is registered here.
Parts are registered in the same transaction as their posts; a part that reached the disk
but not this table (a kill -9 between the two) is found and registered at the next start,
so a rerun never writes a post twice and never loses one.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq

log = logging.getLogger(__name__)


class Archive:
    def __init__(self, raw: Path):
        self.path = raw / "state.sqlite"
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS posts (site TEXT, id INTEGER, status TEXT, md5 TEXT,
                image_path TEXT, PRIMARY KEY (site, id));
            CREATE INDEX IF NOT EXISTS posts_md5 ON posts (md5);
            CREATE TABLE IF NOT EXISTS parts (name TEXT PRIMARY KEY);
        """)
        self.db.commit()

    def reconcile(self, posts_dir: Path) -> int:
        """Register parts on disk that the table does not know; returns how many."""
        known = {r[0] for r in self.db.execute("SELECT name FROM parts")}
        added = 0
        for part in sorted(posts_dir.glob("*.parquet")):
            if part.name in known:
                continue
            table = pq.read_table(part, columns=["site", "id", "status", "md5", "image_path"])
            self.record(part.name, table.to_pylist())
            added += 1
        if added:
            log.info("registered %d parquet part(s) written by an interrupted run", added)
        return added

    def done(self, site: str, post_id: int) -> bool:
        row = self.db.execute("SELECT 1 FROM posts WHERE site=? AND id=?", (site, post_id))
        return row.fetchone() is not None

    def image_for(self, md5: str) -> str | None:
        row = self.db.execute("SELECT image_path FROM posts WHERE md5=? AND image_path IS NOT "
                              "NULL LIMIT 1", (md5,))
        found = row.fetchone()
        return found[0] if found else None

    def record(self, part: str, rows: list[dict]) -> None:
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO parts VALUES (?)", (part,))
            self.db.executemany(
                "INSERT OR IGNORE INTO posts VALUES (:site, :id, :status, :md5, :image_path)",
                rows)

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM posts GROUP BY status"))

    def close(self) -> None:
        self.db.close()
