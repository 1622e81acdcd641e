"""Thumbnails of the validation pictures a report shows, cut from the shards in one pass."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from PIL import Image

from shards import log_and_continue, read_shards

log = logging.getLogger(__name__)


def write_thumbnails(shards: str, wanted: dict[str, str], folder: Path,
                     size: int = 96) -> int:
    """Write `folder/<name>.jpg` (at most `size` px a side) for each sample key in `wanted`
    (key -> file stem). Unreadable samples are logged and skipped. Returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    left, written = dict(wanted), 0
    if not left:
        return 0
    for sample in read_shards(shards, "val", image="bytes", handler=log_and_continue):
        stem = left.pop(sample["__key__"], None)
        if stem is None:
            continue
        try:
            with Image.open(io.BytesIO(sample["image"])) as im:
                im = im.convert("RGB")
                im.thumbnail((size, size))
                im.save(folder / f"{stem}.jpg", "JPEG", quality=82)
            written += 1
        except OSError as exc:
            log.warning("report: no thumbnail for %s: %s", sample["__key__"], exc)
        if not left:
            break
    return written
