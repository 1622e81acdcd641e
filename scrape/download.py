"""Download one file, verify it, and move it into `raw/images/` atomically.

A body is accepted only when it is non-empty, not an HTML page, as long as its Content-Length,
matches the site's md5 (originals; a sample has no md5 to check), and its magic bytes say it is
an image; the extension comes from those bytes. A sample is stored as `<md5>-sample.<ext>`
(the md5 of its original), a name no original can have.
Bad bodies are retried (they are often transient: an error page, a cut connection); the bytes
go to `raw/.tmp/` first and are renamed into place, so `images/` never holds a partial file.
The md5 runs on a thread (hashlib releases the GIL): the event loop keeps the other downloads
moving while a large file is hashed. The write stays on the loop, so a cancelled run (Ctrl-C)
never leaves a stored file without its row.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import FetchError, ScrapeError
from .filetype import IMAGE_TYPES, looks_like_html, sniff
from .http import Client

log = logging.getLogger(__name__)
CONTENT_ATTEMPTS = 3


@dataclass
class Saved:
    image_path: str         # relative to raw/
    ext: str
    size: int
    corrected: bool         # the extension differs from what the site claimed


def image_name(md5: str, ext: str, variant: str = "original") -> str:
    """`images/<md5[0:2]>/<md5>.<ext>`, or `<md5>-sample.<ext>` for a sample."""
    suffix = "" if variant == "original" else f"-{variant}"
    return f"images/{md5[:2]}/{md5}{suffix}.{ext}"


class ImageStore:
    """raw/images/<md5[0:2]>/<md5>[-sample].<ext>, written through raw/.tmp/."""

    def __init__(self, raw: Path):
        self.raw = raw
        self.tmp = raw / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        for stale in self.tmp.iterdir():        # left by a killed run
            stale.unlink(missing_ok=True)

    def existing(self, md5: str, variant: str = "original") -> str | None:
        """The relative path of an image of this md5 and variant already stored, if any."""
        if not (self.raw / "images" / md5[:2]).is_dir():
            return None
        for ext in sorted(IMAGE_TYPES):
            if (self.raw / (rel := image_name(md5, ext, variant))).exists():
                return rel
        return None

    def put(self, md5: str, ext: str, data: bytes, variant: str = "original") -> str:
        rel = image_name(md5, ext, variant)
        final = self.raw / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp / f"{md5}.{uuid.uuid4().hex[:8]}.part"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):     # one line, exit 1 (disk_full)
                raise OSError(exc.errno, exc.strerror, str(final)) from None
            if exc.errno == errno.EROFS:
                raise ScrapeError(f"cannot write images: {exc.strerror} ({self.raw})") from None
            raise
        return rel


async def fetch_image(client: Client, store: ImageStore, url: str, md5: str,
                      claimed_ext: str | None, variant: str = "original") -> Saved:
    """Download `url` (the post's `variant` file) and store it under `md5`, checking the md5
    for an original; raises FetchError with a reason."""
    verify_md5 = variant == "original"
    problem = FetchError("failed", "no attempt made")
    for attempt in range(CONTENT_ATTEMPTS):
        if attempt:
            await client.pause(attempt - 1, None)
        reply = await client.get(url)
        if reply.status != 200:
            reason = "not_found" if reply.status == 404 else f"http_{reply.status}"
            raise FetchError(reason, f"HTTP {reply.status}", reply.status)
        data = reply.body
        expected = reply.headers.get("Content-Length")
        if not data:
            problem = FetchError("empty", "empty body")
        elif looks_like_html(data, reply.content_type):
            problem = FetchError("html", f"an HTML page ({reply.content_type or 'no type'})")
        elif expected is not None and expected.isdigit() and int(expected) != len(data):
            problem = FetchError("size_mismatch", f"{len(data)} bytes, expected {expected}")
        elif verify_md5 and await asyncio.to_thread(_md5, data) != md5:
            problem = FetchError("md5_mismatch", "the body's md5 differs from the site's")
        else:
            kind = sniff(data)
            if kind not in IMAGE_TYPES:
                raise FetchError("not_image", f"the body is {kind or 'not a known format'}")
            if claimed_ext and kind != claimed_ext:
                log.debug("%s: the site says .%s, the bytes are .%s", url, claimed_ext, kind)
            rel = store.put(md5, kind, data, variant)
            return Saved(rel, kind, len(data), corrected=bool(claimed_ext) and
                         kind != claimed_ext)
        log.debug("%s: %s (attempt %d)", url, problem, attempt + 1)
    raise problem


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
