"""Read shards back: webdataset-style stages (generators) and a ready-made pipeline.

    for sample in read_shards("shards/", split="train", image="numpy"):
        sample["image"]  # H x W x 3 uint8 RGB (a PIL image with image="pil", bytes with "bytes")
        sample["meta"]   # the <key>.json dict: key, site, id, tags, labels, label_ids, ...

Each stage takes an iterator of dicts and yields dicts; ``handler`` decides what an exception
does, as in webdataset: return True to skip the item, False to stop, or raise it (the default).

    list_shards(source, split)  -> {"url", "name", "samples"}, one per shard of the manifest
    tar_samples(shards)         -> {"__key__", "__url__", "jpg" | "webp": bytes, "json": bytes}
    decode(samples, image=...)  -> {"__key__", "__url__", "image", "meta", "format"}
    image_member(sample)        -> (ext, bytes): the image member of a tar sample

A sample's labels are its ``meta["label_ids"]`` (:mod:`.labels`), as make-shards recorded them.

``source`` is a shard root or manifest, as a local path or a URL that :mod:`.streams` opens
(http(s) with retries, ``pipe:...``). The same shards load with plain webdataset,
``webdataset.WebDataset(shard_urls(source, "train"), shardshuffle=False)``, and with Hugging
Face datasets, ``load_dataset("webdataset", data_files={"train": "shards/train/*.tar"})``: name
the tar files, as a folder of tar and parquet files is otherwise taken for a parquet dataset.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image
from webdataset.handlers import reraise_exception

from .format import IMAGE_EXTS
from .manifest import read_manifest, split_shards
from .streams import tar_samples as _tar_samples

log = logging.getLogger(__name__)

Handler = Callable[[Exception], bool]
IMAGE_KINDS = ("numpy", "pil", "bytes")


def log_and_continue(exn: Exception) -> bool:
    """A handler that logs a warning and skips the item (webdataset's sleeps 0.5 s per error)."""
    log.warning("skipping a sample: %s", exn)
    return True


def shard_urls(source: str | Path, split: str = "train",
               manifest: dict[str, Any] | None = None) -> list[str]:
    """Paths or URLs of the tars of ``split``, in order. Raises ManifestError."""
    return [shard["url"] for shard in list_shards(source, split, manifest=manifest)]


def list_shards(source: str | Path, split: str = "train",
                manifest: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Source stage: one ``{"url", "name", "samples"}`` per shard of ``split``.

    ``samples`` counts the samples in the tar (successes). Raises ManifestError when the split
    is unknown or the manifest says the build is not complete.
    """
    manifest = manifest if manifest is not None else read_manifest(source)
    yield from split_shards(manifest, source, split)


def tar_samples(shards: Iterable[dict[str, Any]],
                handler: Handler = reraise_exception) -> Iterator[dict[str, Any]]:
    """Open each ``{"url": ...}`` and yield its samples, members grouped by key."""
    for shard in shards:
        try:
            yield from _tar_samples(shard["url"])
        except Exception as exn:
            if handler(exn):
                continue
            break


def image_member(sample: dict[str, Any]) -> tuple[str, bytes]:
    """``(extension, bytes)`` of a sample's image member, one of IMAGE_EXTS (the members
    make-shards writes). Raises ValueError for a sample without one."""
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    if ext is None:
        raise ValueError(f"sample {sample.get('__key__')} has no image "
                         f"(members: {', '.join(k for k in sample if k[:2] != '__')})")
    return ext, sample[ext]


def _decode_image(data: bytes, ext: str, image: str) -> Any:
    if image == "bytes":
        return data
    if image == "numpy" and ext == "jpg":
        return simplejpeg.decode_jpeg(data, "RGB")
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    return np.asarray(rgb) if image == "numpy" else rgb


def decode(samples: Iterable[dict[str, Any]], image: str = "numpy",
           handler: Handler = reraise_exception) -> Iterator[dict[str, Any]]:
    """Decode the image (``numpy``, ``pil`` or ``bytes``) and parse the JSON of each sample."""
    if image not in IMAGE_KINDS:
        raise ValueError(f"image must be one of {IMAGE_KINDS}, got {image!r}")
    for sample in samples:
        try:
            ext, data = image_member(sample)
            yield {
                "__key__": sample["__key__"],
                "__url__": sample.get("__url__"),
                "image": _decode_image(data, ext, image),
                "meta": json.loads(sample["json"]),
                "format": ext,
            }
        except Exception as exn:
            if handler(exn):
                continue
            break


def read_shards(source: str | Path, split: str = "train", image: str = "numpy",
                handler: Handler = reraise_exception) -> Iterator[dict[str, Any]]:
    """list_shards -> tar_samples -> decode, in shard order. Raises ManifestError up front."""
    shards = list(list_shards(source, split))
    return decode(tar_samples(iter(shards), handler=handler), image=image, handler=handler)
