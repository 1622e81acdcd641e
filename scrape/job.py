"""One scrape: list a search, decide each post, download with N workers, write parquet parts.

    site.pages() ──▶ decide() ──▶ queue (bounded) ──▶ N download workers ──▶ PartWriter
                       │                                                      ▲
                       └── skipped / deduped / metadata-only rows ────────────┘

Listing and downloads overlap; the bounded queue keeps memory flat whatever the result size.
A post already in the archive (an earlier run, another query into the same raw/) is passed
over, unless its latest row failed and this is a `--retry-failed` run, or it holds a sample
and this run wants originals; then a new row supersedes the old one. An md5 already on disk
is linked, not downloaded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from tqdm import tqdm

from . import DEFAULT_AGENT, __version__
from .archive import Archive
from .download import ImageStore, fetch_image
from .errors import FetchError
from .http import Client
from .metadata import PartWriter, row
from .post import IMAGE_EXTS, Post
from .sites import SITES, TagCache

log = logging.getLogger(__name__)


@dataclass
class ScrapeSettings:
    site: str
    tags: str
    out: Path
    limit: int | None = None            # the first N posts of the search
    base_url: str | None = None
    concurrency: int = 8                # parallel downloads
    rate: float | None = None           # API requests/s per host; None: the site's default
    file_rate: float | None = None      # file requests/s per file host; None: the site's
    burst: int | None = None
    retries: int = 5                    # extra attempts per request
    backoff: float = 1.0                # seconds; doubled each attempt, with full jitter
    timeout: float = 60.0
    ratings: list[str] | None = None    # keep only these (general, sensitive, ...)
    min_score: int | None = None
    variant: str = "original"           # original | sample
    retry_failed: bool = False          # try again the posts whose latest row failed
    replace_samples: bool = False       # an original run deletes the samples it supersedes
    metadata_only: bool = False
    user_agent: str = DEFAULT_AGENT
    flush_rows: int = 2000
    flush_seconds: float = 30.0
    progress: bool = True

    def public(self) -> dict:
        """The settings as written next to the output (no secrets are ever in them)."""
        d = asdict(self)
        d["out"] = str(self.out)
        return d


@dataclass
class Summary:
    statuses: Counter = field(default_factory=Counter)     # rows written by this run
    already: int = 0                                        # posts an earlier run finished
    filtered: int = 0                                       # left out by --ratings/--min-score
    deduped: int = 0                                        # md5 already on disk
    listed: int = 0
    bytes: int = 0
    requests: int = 0
    retries: int = 0


class ScrapeJob:
    def __init__(self, settings: ScrapeSettings):
        self.s = settings
        self.raw = Path(settings.out)
        self.summary = Summary()
        self._in_flight: set[int] = set()
        self._replaced: list[tuple[str, int, str]] = []   # samples an original may supersede

    async def run(self) -> Summary:
        s = self.s
        site_cls = SITES[s.site]
        self.raw.mkdir(parents=True, exist_ok=True)
        archive = Archive(self.raw)
        archive.reconcile(self.raw / "posts")
        self.store = ImageStore(self.raw)
        self.writer = PartWriter(self.raw, archive, s.flush_rows, s.flush_seconds)
        self.archive = archive
        self._write_settings()
        rate = site_cls.rate if s.rate is None else (s.rate or None)
        file_rate = site_cls.file_rate if s.file_rate is None else (s.file_rate or None)
        client = Client(s.user_agent, rate=rate, burst=s.burst or site_cls.burst,
                        retries=s.retries, backoff=s.backoff, timeout=s.timeout,
                        concurrency=s.concurrency, file_rate=file_rate)
        bar = tqdm(desc=f"{s.site}", unit=" posts", disable=not s.progress, smoothing=0.1)
        self.bar = bar
        try:
            async with client:
                site = site_cls(client, s.base_url, TagCache(archive.db, s.site))
                client.api_hosts = frozenset({urlsplit(site.base).netloc})
                queue: asyncio.Queue = asyncio.Queue(maxsize=s.concurrency * 4)
                try:
                    # A task group: if a worker dies, the listing stops too (no hang).
                    async with asyncio.TaskGroup() as group:
                        for _ in range(s.concurrency):
                            group.create_task(self._worker(client, queue))
                        await self._list(site, queue)
                        for _ in range(s.concurrency):
                            await queue.put(None)
                except BaseExceptionGroup as group_error:
                    raise _first(group_error) from None
                finally:
                    self.summary.requests, self.summary.retries = client.requests, client.retried
        except BaseException:
            # Keep what was fetched; but when that fails too (the disk that stopped the job is
            # still full), the first error is the one to report: a rerun redoes these posts.
            with contextlib.suppress(OSError):
                await self.writer.flush()
            raise
        else:
            await self.writer.flush()
        finally:
            bar.close()
            self._drop_replaced_samples()
            archive.close()
        return self.summary

    def _drop_replaced_samples(self) -> None:
        """--replace-samples: delete each superseded sample no post's latest row points at."""
        for site, post_id, path in self._replaced:
            latest = self.archive.latest(site, post_id)
            if (latest is not None and latest.variant == "original"
                    and not self.archive.used_by_other(path, site, post_id)):
                (self.raw / path).unlink(missing_ok=True)

    async def _list(self, site, queue: asyncio.Queue) -> None:
        seen = 0
        async for page in site.pages(self.s.tags):
            if self.writer.parts == 0:          # pyarrow loads once the first request is out
                self.writer.preload()
            for post in page:
                seen += 1
                self.summary.listed += 1
                await self._decide(post, queue)
                if self.s.limit is not None and seen >= self.s.limit:
                    return
            self._progress()
            await self.writer.maybe_flush()

    async def _decide(self, post: Post, queue: asyncio.Queue) -> None:
        s, summary = self.s, self.summary
        latest = self.archive.latest(post.site, post.id)
        if ((latest is not None and not self._redo(latest))
                or self.writer.holds(post.site, post.id) or post.id in self._in_flight):
            summary.already += 1
            return
        if latest is not None and latest.variant == "sample" and s.replace_samples:
            self._replaced.append((post.site, post.id, latest.image_path))
        if (s.ratings and post.rating not in s.ratings) or (
                s.min_score is not None and (post.score is None or post.score < s.min_score)):
            summary.filtered += 1
            return
        status = _skip_reason(post)
        if status:
            self._add(row(post, status))
        elif s.metadata_only:
            self._add(row(post, "metadata_only"))
        elif existing := self._on_disk(post.md5):
            summary.deduped += 1
            self._add(row(post, "downloaded", image_path=existing[0],
                          file_ext=existing[0].rsplit(".", 1)[1], variant=existing[1]))
        else:
            self._in_flight.add(post.id)
            await queue.put(post)

    def _redo(self, latest) -> bool:
        """Whether a post that an earlier run finished gets a new row in this one."""
        if latest.status.startswith("failed_"):
            return self.s.retry_failed
        return (latest.status == "downloaded" and latest.variant == "sample"
                and self.s.variant == "original" and not self.s.metadata_only)

    def _on_disk(self, md5: str) -> tuple[str, str] | None:
        """(path, variant) of a stored image this run can link: an original always, a sample
        when the run wants samples."""
        variants = ("original", "sample") if self.s.variant == "sample" else ("original",)
        for variant in variants:
            found = self.archive.image_for(md5, variant) or self.store.existing(md5, variant)
            if found:
                return found, variant
        return None

    async def _worker(self, client: Client, queue: asyncio.Queue) -> None:
        while (post := await queue.get()) is not None:
            url = post.file_url
            if self.s.variant == "sample" and post.sample_url:
                url = post.sample_url
            variant = "original" if url == post.file_url else "sample"
            try:
                try:
                    saved = await fetch_image(client, self.store, url, post.md5,
                                              post.file_ext, variant)
                except FetchError as exc:
                    if exc.reason != "not_found" or url == (post.sample_url or url):
                        raise
                    url, variant = post.sample_url, "sample"    # the original is gone
                    saved = await fetch_image(client, self.store, url, post.md5, None, variant)
            except FetchError as exc:
                self._add(row(post, f"failed_{exc.reason}", error=str(exc), file_url=url))
            else:
                self.summary.bytes += saved.size
                self._add(row(post, "downloaded", image_path=saved.image_path,
                              file_ext=saved.ext, file_url=url, variant=variant))
            self._in_flight.discard(post.id)
            self._progress()
            await self.writer.maybe_flush()

    def _add(self, r: dict) -> None:
        self.writer.add(r)
        self.summary.statuses[r["status"]] += 1
        self.bar.update(1)

    def _progress(self) -> None:
        if self.bar.disable:                    # -q, or no terminal: nothing to format
            return
        st = self.summary.statuses
        failed = sum(v for k, v in st.items() if k.startswith("failed"))
        self.bar.set_postfix(listed=self.summary.listed, images=st["downloaded"],
                             MB=round(self.summary.bytes / 1e6, 1), failed=failed,
                             refresh=False)

    def _write_settings(self) -> None:
        runs = self.raw / "runs"
        runs.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = runs / f"{stamp}-{self.s.site}-{uuid.uuid4().hex[:8]}.json"
        path.write_text(json.dumps({"version": __version__, **self.s.public()}, indent=2))


def _first(group: BaseExceptionGroup) -> BaseException:
    """The first real error of a task group (unwrapping nested groups)."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _skip_reason(post: Post) -> str | None:
    """Why a post cannot be downloaded at all, as a status; None when it can."""
    if post.deleted:
        return "skipped_deleted"
    if post.banned:
        return "skipped_banned"
    if not post.file_url:
        return "skipped_hidden"
    if post.md5 is None:
        return "failed_invalid_md5"
    if post.file_ext is not None and post.file_ext not in IMAGE_EXTS:
        return "skipped_not_image"
    return None
