"""Opening shard files on local disk, over HTTP(S) with retries, or through ``pipe:`` commands.

    open_stream("shards/train/00000.tar")                  # a local file
    open_stream("https://host/ds/train/00000.tar")         # retried on 429, 5xx, resets
    open_stream("pipe:aws s3 cp s3://b/ds/00000.tar -")    # a command's stdout (webdataset)
    tar_samples(url)          # the samples of one tar: {"__key__", "__url__", "<ext>": bytes}
    count_samples(url)        # how many, read to the end
    expand_pattern("https://host/ds/train/{00000..00099}.tar")   # manifest-less listing

HTTP errors that a retry may fix (408, 429, 5xx, resets, timeouts) are retried with
exponential backoff; every other scheme goes through webdataset's ``gopen``. Tar members are
grouped into samples by webdataset's tar stages (the key is the name up to the first dot).
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import IO, Any

from braceexpand import braceexpand

from .storage import is_object_url, open_url

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
AGENT = "booru-tagger-shards/0.1"
BACKOFF_S = 0.5  # the first retry's wait (default); each next one doubles it


def open_stream(url: str, retries: int = 5, backoff: float | None = None) -> IO[bytes]:
    """A binary file object for a path or URL; raises OSError when it cannot be opened."""
    backoff = BACKOFF_S if backoff is None else backoff
    if is_object_url(url):  # s3://, gs://, ... through fsspec (shards/storage.py)
        return open_url(url, retries, backoff)
    if not url.startswith(("http://", "https://")):
        if "://" not in url and not url.startswith("pipe:"):
            return open(url, "rb")  # noqa: SIM115 (the caller closes it)
        from webdataset.gopen import gopen
        return gopen(url, "rb")
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


def tar_samples(url: str) -> Iterator[dict[str, Any]]:
    """The samples of one tar shard, members grouped by key. Raises OSError, tarfile errors."""
    import webdataset as wds
    stream = open_stream(url)
    try:
        files = wds.tariterators.tar_file_expander([{"url": url, "stream": stream}],
                                                   handler=wds.reraise_exception)
        yield from wds.tariterators.group_by_keys(files, handler=wds.reraise_exception)
    finally:
        stream.close()


def count_samples(url: str) -> int:
    """The number of samples in one tar shard, by reading it to its end (nothing is decoded).
    Raises OSError, tarfile errors."""
    return sum(1 for _ in tar_samples(url))


def expand_pattern(pattern: str) -> list[str]:
    """The tar URLs of a brace pattern (``.../{00000..00099}.tar``), for shards without a
    manifest. Raises ValueError when the pattern names no tar file."""
    urls = list(braceexpand(pattern))
    if not urls or not all(u.endswith(".tar") for u in urls):
        raise ValueError(f"{pattern}: a shard pattern names .tar files, e.g. "
                         "'https://host/ds/train/{00000..00099}.tar'")
    return urls
