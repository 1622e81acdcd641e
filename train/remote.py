"""Opening shards, manifests and tag indexes on local disk or over HTTP(S), with retries.

HTTP errors that a retry may fix (429, 5xx, resets, timeouts) are retried with exponential
backoff; other schemes go through webdataset's `gopen` (local paths, `pipe:`, and so on).
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request

import webdataset as wds

from shards.storage import is_object_url, open_url

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
AGENT = "booru-tagger-train/0.1"


def open_stream(url: str, retries: int = 5, backoff: float = 0.5):
    """A binary file object for a path or URL; raises OSError when it cannot be opened."""
    if is_object_url(url):  # s3://, gs://, ... through fsspec (shards/storage.py)
        return open_url(url, retries, backoff)
    if not url.startswith(("http://", "https://")):
        return wds.gopen(url, "rb")
    for attempt in range(retries + 1):
        try:
            request = urllib.request.Request(url, headers={"User-Agent": AGENT})
            return urllib.request.urlopen(request, timeout=60)
        except urllib.error.HTTPError as exc:
            if exc.code not in RETRY_STATUS or attempt == retries:
                raise OSError(f"HTTP {exc.code} for {url}") from None
            reason = f"HTTP {exc.code}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == retries:
                raise OSError(f"{url}: {exc}") from None
            reason = str(exc)
        wait = backoff * 2 ** attempt
        log.warning("%s: %s; retrying in %.1f s", url, reason, wait)
        time.sleep(wait)
    raise OSError(f"cannot open {url}")


def tar_samples(url: str):
    """The samples of one tar shard, grouped by key (webdataset's tar stages)."""
    stream = open_stream(url)
    try:
        files = wds.tariterators.tar_file_expander([{"url": url, "stream": stream}],
                                                   handler=wds.reraise_exception)
        yield from wds.tariterators.group_by_keys(files, handler=wds.reraise_exception)
    finally:
        stream.close()
