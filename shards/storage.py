"""Shards in object storage: open, list and upload through fsspec (``s3://``, ``gs://``, ...).

    with open_url("s3://bucket/ds/train/00000.tar") as stream:   # retried like HTTP
        ...
    store = Storage("s3://bucket/ds")
    store.put(Path("local/00000.tar"), "train/00000.tar")         # whole objects only
    store.size("train/00000.tar")                                  # None when absent

Any URL whose scheme fsspec resolves works; the protocol packages are optional extras
(``booru-tagger[s3]`` for ``s3://``: s3fs; ``[gcs]``: gcsfs; ``[azure]``: adlfs), imported on
first use, and a missing one is a one-line :class:`StorageError`. Credentials come only from
where the provider's library looks (environment, its config files, instance roles); nothing
here takes, logs or stores them. An endpoint such as MinIO or a test server is set with the
standard ``AWS_ENDPOINT_URL`` variable.

:func:`register_webdataset` lets plain ``webdataset.WebDataset`` open the same URLs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from .errors import ShardsError

log = logging.getLogger(__name__)

# URL scheme -> (package fsspec needs, extra of booru-tagger that installs it)
EXTRAS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"),
          "gcs": ("gcsfs", "gcs"), "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"),
          "abfss": ("adlfs", "azure")}
NOT_OBJECT = ("http", "https", "pipe")  # opened by HTTP or webdataset's gopen instead
FATAL = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class StorageError(ShardsError, OSError):
    """Object storage is unusable: missing protocol package, bad URL, failed upload (an OSError,
    so readers that report unreadable files report this too)."""


def is_object_url(location: str) -> bool:
    """True for ``scheme://...`` locations that fsspec opens (not http(s) or ``pipe:``)."""
    scheme = urlparse(str(location)).scheme
    return len(scheme) > 1 and "://" in str(location) and scheme not in NOT_OBJECT


def filesystem(url: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` for ``url``. Raises StorageError."""
    scheme = urlparse(url).scheme
    package, extra = EXTRAS.get(scheme, (None, None))
    try:
        import fsspec
    except ImportError:
        raise StorageError(f"{url}: object storage needs fsspec: pip install "
                           f"'booru-tagger[{extra or 's3'}]'") from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError:
        hint = (f"{package}: pip install 'booru-tagger[{extra}]'" if package
                else "its fsspec package")
        raise StorageError(f"{url}: {scheme}:// needs {hint}") from None
    except ValueError as exc:
        raise StorageError(f"{url}: {exc}") from None


def _retrying(what: str, action, retries: int, backoff: float):
    for attempt in range(retries + 1):
        try:
            return action()
        except FATAL:
            raise
        except OSError as exc:
            if attempt == retries:
                raise
            wait = backoff * 2 ** attempt
            log.warning("%s: %s; retrying in %.1f s", what, type(exc).__name__, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def open_url(url: str, retries: int = 5, backoff: float = 0.5) -> IO[bytes]:
    """A binary stream of the object at ``url``, opening retried on transient errors.

    Raises StorageError for a missing protocol package and OSError when the object cannot be
    opened (FileNotFoundError at once, other errors after ``retries``)."""
    fs, path = filesystem(url)
    return _retrying(url, lambda: fs.open(path, "rb"), retries, backoff)


class Storage:
    """A folder in object storage (or any fsspec URL): whole-object put, get, size, delete.

    Picklable (only the URL is kept; each process builds its own filesystem), so Ray tasks
    can carry it."""

    def __init__(self, url: str, retries: int = 5, backoff: float = 0.5):
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._fs: Any = None
        self._root = ""

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fs": None}

    @property
    def fs(self) -> Any:
        if self._fs is None:
            self._fs, root = filesystem(self.url)
            self._root = root.rstrip("/")
        return self._fs

    def path(self, name: str) -> str:
        """The filesystem path of ``name`` (relative, ``/``-separated) under the folder."""
        self.fs  # noqa: B018 (sets the root)
        return f"{self._root}/{name}" if name else self._root

    def location(self, name: str) -> str:
        """The URL of ``name`` under the folder."""
        return f"{self.url}/{name}"

    def _retry(self, what: str, action):
        return _retrying(f"{self.url}/{what}", action, self.retries, self.backoff)

    def size(self, name: str) -> int | None:
        """Size in bytes of ``name``, or None when it does not exist."""
        version = self.version(name)
        return None if version is None else int(version.split(":", 1)[0])

    def version(self, name: str) -> str | None:
        """``"size:tag"`` of ``name`` (the tag: its ETag, checksum or modification time, as
        the store reports it), which changes when the object is rewritten; None when it does
        not exist."""
        path = self.path(name)
        try:
            info = self._retry(name, lambda: self.fs.info(path))
        except FileNotFoundError:
            return None
        if info.get("type") == "directory":
            return None
        tag = next((str(info[k]) for k in ("ETag", "etag", "md5", "checksum", "LastModified",
                                            "mtime", "last_modified") if info.get(k)), "")
        return f"{int(info['size'])}:{tag}"

    def get(self, name: str) -> bytes | None:
        """The bytes of ``name``, or None when it does not exist."""
        path = self.path(name)
        try:
            return self._retry(name, lambda: self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def put(self, local: Path, name: str) -> None:
        """Upload ``local`` as ``name``; readers see the whole object or nothing. Raises
        StorageError when it fails after the retries or arrives with another size."""
        path, want = self.path(name), local.stat().st_size
        local_fs = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple)
                              else (self.fs.protocol,))
        target = f"{path.rsplit('/', 1)[0]}/.{path.rsplit('/', 1)[1]}.tmp" if local_fs else path
        try:  # object stores make a PUT visible whole; a local folder needs a rename
            if local_fs:
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self._retry(name, lambda: self.fs.put_file(str(local), target))
            if local_fs:
                self.fs.mv(target, path)
        except OSError as exc:
            raise StorageError(f"cannot upload {name} to {self.url}: {exc}") from None
        if self.size(name) != want:
            raise StorageError(f"{self.location(name)}: uploaded size differs from {local}")

    def delete(self, prefix: str) -> None:
        """Delete ``prefix`` (an object or a folder) when it exists."""
        path = self.path(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def listing(self, prefix: str = "") -> list[str]:
        """Names (relative to the folder) of every object under ``prefix``."""
        root = self.path("")
        try:
            found = self.fs.find(self.path(prefix))
        except FileNotFoundError:
            return []
        return sorted(p[len(root) + 1:] for p in found)


def fetch_files(url: str, names: tuple[str, ...], into: Path | None = None) -> Path:
    """Copy ``names`` under the folder ``url`` into a local folder (default: one per URL
    under the temp dir; a copy already there is kept while the object's size and version tag
    are those it was fetched at, so a rewritten object is fetched again); returns it.

    Raises FileNotFoundError for a missing object and StorageError for other failures."""
    import hashlib
    import tempfile

    folder = into or Path(tempfile.gettempdir()) / "booru-tagger-fetch" / hashlib.sha256(
        url.rstrip("/").encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    store = Storage(url)
    for name in names:
        version, local = store.version(name), folder / name
        if version is None:
            raise FileNotFoundError(f"{store.location(name)} does not exist")
        stamp = folder / f".{name}.version"
        if local.is_file() and stamp.is_file() and stamp.read_text() == version:
            continue
        data = store.get(name) or b""
        tmp = local.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(local)
        stamp.write_text(version)
    return folder


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> IO[bytes]:
    if mode[0] != "r":
        raise ValueError(f"{url}: only reading is supported")
    return open_url(url)


def register_webdataset(schemes: tuple[str, ...] = ("s3", "gs", "gcs", "az", "abfs")) -> None:
    """Let webdataset's ``gopen`` (and so ``webdataset.WebDataset``) open these schemes
    through fsspec with :func:`open_url`'s retries."""
    import sys

    import webdataset.gopen  # noqa: F401 (the module; the package re-exports the function)

    module = sys.modules["webdataset.gopen"]
    for scheme in schemes:
        module.gopen_schemes[scheme] = _gopen_fsspec
