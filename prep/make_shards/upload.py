"""``make-shards --out s3://bucket/ds/``: build in a local upload folder, upload as shards finish.

    local upload folder (``--staging``; the ``out``)      bucket (``RemoteOutput.storage``)
      train/00000.tar, .parquet, _stats.json  ──upload──▶  train/00000.tar, .parquet, then stats
      (tar and parquet deleted once uploaded)
      tags.csv, manifest.json (incomplete)    ──upload──▶  at the start, unless a manifest of
                                                           this same build is already there
      manifest.json (complete)                ──upload──▶  last: readers never see a half build

The bucket is the truth: a shard counts as done when its stats object is there and the tar and
parquet objects have the sizes the stats record, so a rerun after kill -9 (on this machine or
another) skips every uploaded shard and rebuilds the rest. The build record of the remote
manifest is checked like a local folder's (:mod:`.output`). Credentials are the storage
library's business (:mod:`shards.storage`); nothing here sees them. The upload folder is not
the first-pass cache (``out/.stage/``, :mod:`.first_pass`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shards.format import FORMAT_NAME, MANIFEST, SPLITS, TAGS, ShardPaths
from shards.storage import Storage, StorageError

from ..errors import InputError, SettingsError
from ..pause import pause_point
from .output import clear_output, describe_difference

log = logging.getLogger(__name__)


def default_upload_dir(url: str) -> Path:
    """The default local upload folder (``--staging``) of an output URL: one per URL under
    the temp dir, reused on resume."""
    digest = hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "booru-tagger-staging" / digest


class RemoteOutput:
    """Where finished shards go when ``--out`` is a URL; see the module docstring."""

    def __init__(self, url: str):
        self.storage = Storage(url)
        self._same_build = False
        self._uploader: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def __getstate__(self) -> dict[str, Any]:  # Ray tasks carry a copy: no thread, no upload
        return {**self.__dict__, "_uploader": None, "_pending": None}

    @property
    def url(self) -> str:
        return self.storage.url

    def _get(self, name: str) -> bytes | None:
        try:
            return self.storage.get(name)
        except OSError as exc:
            raise StorageError(f"cannot read {self.storage.location(name)}: {exc}") from None

    def prepare(self, upload_dir: Path, build: dict[str, Any], overwrite: bool) -> bool:
        """Check the bucket folder like :func:`.output.prepare_output`; True when it
        resumes the same build. Empties ``upload_dir`` (the bucket is the truth)."""
        clear_output(upload_dir)
        data = self._get(MANIFEST)
        old: dict[str, Any] = {}
        if data is not None:
            try:
                old = json.loads(data)
            except ValueError:
                old = {}
            if old.get("format") == FORMAT_NAME and old.get("build") == build:
                self._same_build = True
                return True
        elif not self.storage.listing():
            return False
        if not overwrite:
            if data is None:
                raise InputError(f"{self.url} is not empty and has no {MANIFEST}; choose a new "
                                 "or empty --out, or add --overwrite")
            if old.get("format") != FORMAT_NAME or not isinstance(old.get("build"), dict):
                raise InputError(f"{self.url}/{MANIFEST} is not a shard manifest; choose "
                                 "another --out or add --overwrite")
            raise SettingsError(f"{self.url} holds shards built differently: "
                                f"{describe_difference(old['build'], build)}. Rerun with the "
                                "original arguments to resume, or add --overwrite to rebuild")
        log.warning("--overwrite: deleting the shards in %s", self.url)
        for name in (*SPLITS, MANIFEST, TAGS):
            self.storage.delete(name)
        return False

    def begin(self, upload_dir: Path) -> None:
        """Upload tags.csv and the incomplete manifest (records the build for a resume)."""
        if not self._same_build:
            self.storage.put(upload_dir / TAGS, TAGS)
            self.storage.put(upload_dir / MANIFEST, MANIFEST)

    def done(self, upload_dir: Path, split: str, name: str) -> bool:
        """True when the shard is complete in the bucket; then its stats are copied into
        ``upload_dir`` for the manifest."""
        data = self._get(f"{split}/{name}_stats.json")
        if data is None:
            return False
        try:
            stats = json.loads(data)
            sizes = {"tar": stats["tar_bytes"], "parquet": stats["parquet_bytes"]}
        except (ValueError, KeyError, TypeError):
            return False
        for ext, size in sizes.items():
            if self.storage.size(f"{split}/{name}.{ext}") != size:
                return False
        local = ShardPaths.of(upload_dir / split, name).stats
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        return True

    def put_shard(self, upload_dir: Path, split: str, name: str) -> None:
        """Start uploading a finished shard in the background (one at a time, so the next
        shard is built meanwhile); raises the error of the previous upload, if any."""
        self.wait()
        if self._uploader is None:
            self._uploader = ThreadPoolExecutor(1, thread_name_prefix="upload")
        self._pending = self._uploader.submit(self._upload_shard, upload_dir, split, name)

    def wait(self) -> None:
        """Wait for the upload in progress; raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _upload_shard(self, upload_dir: Path, split: str, name: str) -> None:
        """Upload a finished shard, stats last, and drop its local tar and parquet."""
        paths = ShardPaths.of(upload_dir / split, name)
        for path in (paths.tar, paths.parquet, paths.stats):
            self.storage.put(path, f"{split}/{path.name}")
        paths.tar.unlink()
        paths.parquet.unlink()
        pause_point("shard-uploaded")

    def finish(self, upload_dir: Path) -> None:
        """Upload tags.csv (when new) and the final manifest, last; empty ``upload_dir``."""
        self.wait()
        if self.storage.size(TAGS) != (upload_dir / TAGS).stat().st_size:
            self.storage.put(upload_dir / TAGS, TAGS)
        self.storage.put(upload_dir / MANIFEST, MANIFEST)
        clear_output(upload_dir)  # only stats and the manifest were left there
