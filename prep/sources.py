"""Where make-shards reads its input: a local folder or an object-storage URL (``s3://...``).

    location("s3://bucket/raw", "images/ab/cd.jpg")   # -> "s3://bucket/raw/images/ab/cd.jpg"
    read_source(location)                              # bytes; open_url's retries for URLs
    fetch_posts("s3://bucket/raw")                     # posts files copied here, image root URL

An image root (``--posts``' scrape folder, ``--images-root``, ``--folder``) may be a URL that
:func:`shards.storage.is_object_url` accepts; an image is then read from ``<root>/<image_path>``
with :func:`shards.storage.open_url`. The posts files themselves are small next to the images
and are copied to a local folder once (:func:`shards.storage.fetch_files`, fetched again only
when an object changes), so every posts format reads as it does from a local folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from shards.storage import Storage, fetch_files, filesystem, is_object_url, open_url

from .errors import EmptyInputError, InputError

Root = Path | str  # a local folder, or the URL of a folder in object storage
Stat = tuple[int, int]  # (size, modification stamp): a staged picture is reused while equal


def location(root: Root, image_path: str) -> str | None:
    """``root / image_path`` when image_path is relative and stays inside root, else None."""
    relative = PurePosixPath(image_path.replace("\\", "/"))
    if not image_path or relative.is_absolute() or ".." in relative.parts:
        return None
    if isinstance(root, str) and is_object_url(root):
        return "/".join([root.rstrip("/"), *relative.parts])
    return str(Path(root).joinpath(*relative.parts))


def open_source(where: str) -> IO[bytes]:
    """A binary stream of a local file or a URL (retried). Raises OSError."""
    return open_url(where) if is_object_url(where) else open(where, "rb")  # noqa: SIM115


def read_source(where: str) -> bytes:
    """The bytes of a local file or a URL. Raises OSError (FileNotFoundError when missing)."""
    if not is_object_url(where):
        return Path(where).read_bytes()
    with open_url(where) as stream:
        return stream.read()


def _stamp(info: dict) -> int:
    tag = next((str(info[k]) for k in ("ETag", "etag", "md5", "checksum", "LastModified",
                                        "mtime", "last_modified") if info.get(k)), "")
    return int(hashlib.sha256(tag.encode()).hexdigest()[:15], 16)


def stat_sources(paths: Sequence[str | None]) -> list[Stat | None]:
    """``(size, stamp)`` of each local file or URL (None: missing or unreadable). URLs are
    listed one folder at a time, not asked one by one."""
    listed: dict[str, dict[str, Stat]] = {}
    out: list[Stat | None] = []
    for path in paths:
        if path is None:
            out.append(None)
        elif not is_object_url(path):
            try:
                info = os.stat(path)
                out.append((info.st_size, info.st_mtime_ns))
            except OSError:
                out.append(None)
        else:
            folder, name = path.rsplit("/", 1)
            if folder not in listed:
                listed[folder] = _listing(folder)
            out.append(listed[folder].get(name))
    return out


def _listing(folder_url: str) -> dict[str, Stat]:
    fs, path = filesystem(folder_url)
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    return {e["name"].rstrip("/").rsplit("/", 1)[-1]: (int(e["size"]), _stamp(e))
            for e in entries if e.get("type") != "directory"}


def list_files(root: str) -> list[str]:
    """Relative names of every object under the folder URL ``root``, sorted."""
    return Storage(root).listing()


def fetch_posts(url: str, suffixes: tuple[str, ...]) -> tuple[list[Path], str]:
    """Copy the posts files of ``url`` (``posts/*`` of a scrape folder, the files of another
    folder with one of ``suffixes``, or one file) to a local folder. Returns the local files
    and the URL their ``image_path`` is relative to. Raises InputError, EmptyInputError."""
    fs, path = filesystem(url)
    url = url.rstrip("/")
    try:
        if fs.isfile(path.rstrip("/")):
            folder, name = url.rsplit("/", 1)
            return [fetch_files(folder, (name,)) / name], folder
        folder = f"{url}/posts" if fs.isdir(f"{path.rstrip('/')}/posts") else url
        names = tuple(n for n in Storage(folder).listing()
                      if "/" not in n and n.lower().endswith(suffixes))
        if not names:
            raise EmptyInputError(f"no posts files found in {url} (looked for posts/*.parquet, "
                                  "*.parquet, *.jsonl)")
        local = fetch_files(folder, names)
    except FileNotFoundError as exc:
        raise InputError(f"{url}: no such file or folder ({exc})") from None
    return [local / n for n in names], url
