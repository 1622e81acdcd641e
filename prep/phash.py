"""Perceptual hash (pHash) of a picture: the 64-bit DCT hash of ``imagehash.phash``.

    grey 32x32 (LANCZOS) -> 2-D DCT-II -> top-left 8x8 -> bit = coefficient > median

This is imagehash's algorithm (``hash_size=8, highfreq_factor=4``) written as two small matrix
products in numpy, so the base install needs neither imagehash nor scipy, and a picture that
is already decoded small costs a few tens of microseconds to hash (docs/BENCHMARKS.md measures
both; ``tests/test_prep_phash.py`` checks the bits against imagehash). The hash is stored as 16
lowercase hex characters, the form of ``str(imagehash.phash(im))``.

:func:`phash_prepared` is what ``make-shards`` stores: the hash of the picture region of the
shard image it prepares anyway (resized, oriented, alpha on white; the padding left out), so
hashing adds no decode (:mod:`.stage`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .imaging import ImageSettings, plan_geometry

HASH_SIZE = 8
IMAGE_SIZE = HASH_SIZE * 4  # imagehash's highfreq_factor 4
_N = np.arange(IMAGE_SIZE)
# scipy.fftpack.dct type II, unnormalised: y[k] = 2 sum_n x[n] cos(pi k (2n + 1) / 2N)
_DCT = 2.0 * np.cos(np.pi * np.arange(HASH_SIZE)[:, None] * (2 * _N[None, :] + 1)
                    / (2 * IMAGE_SIZE))
_WEIGHTS = 1 << np.arange(63, -1, -1, dtype=np.uint64)


@dataclass(frozen=True)
class FileHash:
    """One picture's hash (None when unreadable), oriented original size, and why not."""

    phash: str | None
    width: int | None
    height: int | None
    error: str | None = None


def phash_bits(grey: np.ndarray) -> np.ndarray:
    """The 64 hash bits (bool, row-major) of a 32x32 grey array."""
    low = _DCT @ grey.astype(np.float64) @ _DCT.T
    return (low > np.median(low)).ravel()


def phash_int(im: Image.Image) -> int:
    """The pHash of a Pillow image as an unsigned 64-bit int (first bit = most significant)."""
    grey = np.asarray(im.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE),
                                             Image.Resampling.LANCZOS))
    return int((phash_bits(grey).astype(np.uint64) * _WEIGHTS).sum())


def to_hex(value: int) -> str:
    """16 lowercase hex characters."""
    return f"{value:016x}"


def from_hex(values: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 hashes, valid mask) of hex strings; None or malformed strings are invalid."""
    out = np.zeros(len(values), dtype=np.uint64)
    valid = np.zeros(len(values), dtype=bool)
    for i, text in enumerate(values):
        if isinstance(text, str) and len(text) == 16:
            try:
                out[i] = int(text, 16)
                valid[i] = True
            except ValueError:
                pass
    return out, valid


def reduced(im: Image.Image) -> Image.Image:
    """``im`` box-reduced by an integer factor to no less than 2 x 32 px a side (as Pillow's
    ``reducing_gap``), in a mode ``reduce`` handles; a small picture comes back as it is."""
    alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if im.mode not in ("L", "RGB", "RGBA"):
        im = im.convert("RGBA" if alpha else "RGB")
    factor = min(im.size) // (2 * IMAGE_SIZE)
    return im.reduce(factor) if factor >= 2 else im


def phash_image(im: Image.Image) -> str:
    """The hex pHash of a Pillow image: reduced (:func:`reduced`), transparency onto white.

    For pictures under 128 px a side this is exactly ``str(imagehash.phash(im))``; for larger
    ones the box reduction first makes it several times cheaper and moves a bit or two at most
    (docs/BENCHMARKS.md).
    """
    im = reduced(im)
    if im.mode == "RGBA":
        flat = Image.new("RGBA", im.size, (255, 255, 255, 255))
        flat.alpha_composite(im)
        im = flat
    return to_hex(phash_int(im))


def phash_prepared(picture: Image.Image, original: tuple[int, int],
                   settings: ImageSettings) -> str:
    """The hex pHash of a prepared shard picture (``prep.imaging.prepare_picture``) of an
    ``original`` (oriented) size: the picture region only, without the padding."""
    geometry = plan_geometry(*original, settings)
    (x, y), (w, h) = geometry.offset, geometry.scaled
    if picture.size != (w, h):
        picture = picture.crop((x, y, x + w, y + h))
    return phash_image(picture)
