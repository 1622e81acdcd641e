"""Read shards back: webdataset-style stages (generators) and a ready-made pipeline.

    for sample in read_shards("shards/", split="train", image="numpy"):
        sample["image"]  # H x W x 3 uint8 RGB (a PIL image with image="pil", bytes with "bytes")
        sample["meta"]   # the <key>.json dict: key, site, id, tags, labels, label_ids, ...

Each stage takes an iterator of dicts and yields dicts; ``handler`` decides what an exception
does, as in webdataset: return True to skip the item, False to stop, or raise it (the default).

    list_shards(source, split)  -> {"url", "name", "samples"}, one per shard of the manifest
    tar_samples(shards)         -> {"__key__", "__url__", "jpg" | "webp": bytes, "json": bytes}
    decode(samples, image=...)  -> {"__key__", "__url__", "image", "meta", "format"}

``source`` is a shard root or manifest, as a local path or any URL that webdataset's ``gopen``
opens (http(s) through curl, ``pipe:...``). The same shards load with plain webdataset,
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
from webdataset.gopen import gopen
from webdataset.handlers import reraise_exception
from webdataset.tariterators import tarfile_samples

from .errors import ManifestError
from .format import FORMAT_NAME, FORMAT_VERSION, IMAGE_EXTS, is_url, join_location
from .format import manifest_location as _manifest_location

log = logging.getLogger(__name__)

Handler = Callable[[Exception], bool]
IMAGE_KINDS = ("numpy", "pil", "bytes")


def log_and_continue(exn: Exception) -> bool:
    """A handler that logs a warning and skips the item (webdataset's sleeps 0.5 s per error)."""
    log.warning("skipping a sample: %s", exn)
    return True


def read_manifest(source: str | Path) -> dict[str, Any]:
    """The manifest of a shard root (local or URL). Raises ManifestError."""
    location, _ = _manifest_location(source)
    try:
        if is_url(location):
            with gopen(location) as stream:
                text = stream.read()
        else:
            text = Path(location).read_bytes()
        manifest = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read the shard manifest {location}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise ManifestError(f"{location} is not a {FORMAT_NAME} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(f"{location}: format version {manifest.get('format_version')!r}, "
                            f"this reader knows version {FORMAT_VERSION}")
    return manifest


def is_complete(manifest: dict[str, Any]) -> bool:
    """True when the build that wrote ``manifest`` finished (every shard, every node)."""
    return bool(manifest.get("complete"))


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
    location, base = _manifest_location(source)
    if not is_complete(manifest):
        raise ManifestError(f"{location}: the shards are not complete (prep make-shards was "
                            "interrupted or is still running; rerun it to finish)")
    splits = manifest.get("splits", {})
    if split not in splits:
        raise ManifestError(f"{location}: no split {split!r} (has: {', '.join(splits)})")
    for shard in splits[split]["shards"]:
        url = join_location(base, split, f"{shard['name']}.tar")
        yield {"url": url, "name": shard["name"], "samples": shard.get("successes")}


def tar_samples(shards: Iterable[dict[str, Any]],
                handler: Handler = reraise_exception) -> Iterator[dict[str, Any]]:
    """Open each ``{"url": ...}`` and yield its samples, members grouped by key."""
    yield from tarfile_samples(shards, handler=handler)


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
            ext = next((e for e in IMAGE_EXTS if e in sample), None)
            if ext is None:
                raise ValueError(f"sample {sample.get('__key__')} has no image "
                                 f"(members: {', '.join(k for k in sample if k[:2] != '__')})")
            yield {
                "__key__": sample["__key__"],
                "__url__": sample.get("__url__"),
                "image": _decode_image(sample[ext], ext, image),
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
