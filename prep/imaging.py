"""Decode, convert, resize and encode one image for a shard (the resizer of ``make-shards``).

    bytes -> guards: empty, magic bytes, allowed formats, header size <= max_pixels
          -> decode: JPEG at a DCT scale of 1/2, 1/4 or 1/8 that keeps >= 3x the target
             (simplejpeg, or Pillow ``draft``), everything else fully with Pillow
          -> one of L, RGB, LA, RGBA (palette, CMYK, 16-bit, 1-bit converted)
          -> resize (LANCZOS after an integer box reduction, Pillow ``reducing_gap``)
          -> alpha composited onto white, EXIF orientation applied, pad/crop
          -> RGB encoded as JPEG (4:2:0) or WebP

The guards: a full decode always (never ``verify()``, which checks only the structure),
truncated files are errors (``LOAD_TRUNCATED_IMAGES`` stays off), and the pixel count is checked
from the header before decoding, with Pillow's own decompression bomb check raised to an error
at the same limit. Every rejection is an :class:`ImageRejected` with a ``status`` for the shard
parquet; nothing else is expected to escape :func:`process_image`.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, features

from scrape.filetype import IMAGE_TYPES, sniff

from .sources import read_source

RESIZE_MODES = ("pad", "keep_ratio", "center_crop", "none")
FORMATS = ("jpg", "webp")
ANIMATED_POLICIES = ("skip", "first-frame")
BACKGROUND = (255, 255, 255)
DECODE_MARGIN = 3  # decode a JPEG to at least this many times the output size (see bench)
REDUCING_GAP = 2.0  # box-reduce by an integer factor while staying >= 2x the output size
RESAMPLE = Image.Resampling.LANCZOS
# Pillow plugins an input may use (JPEG covers MPO); anything else (EPS, PSD, TIFF, ...) is
# refused unopened.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP") + (
    ("AVIF",) if features.check("avif") else ()
)
# File names taken as pictures in folders (prep's --folder, tag's inputs).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".gif", ".webp", ".bmp"}
                           | ({".avif"} if "AVIF" in ALLOWED_FORMATS else set()))
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageSettings:
    """How every image of a shard set is stored."""

    size: int = 448  # target side in pixels (see resize_mode)
    resize_mode: str = "pad"  # pad | keep_ratio | center_crop | none
    format: str = "jpg"  # jpg | webp
    quality: int = 90  # JPEG / WebP quality, 1-100
    max_pixels: int = 100_000_000  # refuse images whose header says more pixels than this
    animated: str = "skip"  # skip | first-frame
    upscale: bool = True  # enlarge images smaller than the target
    jpeg_decoder: str = "simplejpeg"  # simplejpeg | pillow (see docs/BENCHMARKS.md)


@dataclass(frozen=True)
class EncodedImage:
    """A processed image: encoded bytes, stored size and the (oriented) original size."""

    data: bytes
    width: int
    height: int
    original_width: int
    original_height: int


class ImageRejected(Exception):
    """An input file that cannot become a sample; ``status`` goes to the shard parquet."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
        self.message = message




@dataclass(frozen=True)
class Geometry:
    """Where the pixels go, in the image's displayed (EXIF-oriented) orientation."""

    scaled: tuple[int, int]  # size of the resized (cropped) picture
    crop: tuple[float, float]  # centred region of the original that is kept
    canvas: tuple[int, int]  # output size
    offset: tuple[int, int]  # where the picture sits on the canvas


def plan_geometry(width: int, height: int, settings: ImageSettings) -> Geometry:
    """Output geometry of a ``width`` x ``height`` picture under ``settings``.

    pad: longest side to ``size``, centred on a white ``size`` square; keep_ratio: shortest side
    to ``size``; center_crop: shortest side to ``size``, centre square; none: unchanged.
    Without ``upscale`` a smaller picture keeps its size (pad and center_crop still fill the
    square with white around it).
    """
    size, mode = settings.size, settings.resize_mode
    if mode == "none":
        return Geometry((width, height), (width, height), (width, height), (0, 0))
    scale = size / (max(width, height) if mode == "pad" else min(width, height))
    if not settings.upscale:
        scale = min(scale, 1.0)
    if mode == "center_crop":
        side = min(width, height, size / scale)
        out = max(1, min(size, round(side * scale)))
        offset = ((size - out) // 2, (size - out) // 2)
        return Geometry((out, out), (side, side), (size, size), offset)
    scaled = (max(1, round(width * scale)), max(1, round(height * scale)))
    if mode == "keep_ratio":
        return Geometry(scaled, (width, height), scaled, (0, 0))
    offset = ((size - scaled[0]) // 2, (size - scaled[1]) // 2)
    return Geometry(scaled, (width, height), (size, size), offset)


def process_file(path: Path | str, settings: ImageSettings) -> EncodedImage:
    """Read ``path`` (a file, or a URL: :func:`.sources.read_source`) and :func:`process_image`
    it. Raises ImageRejected (missing/unreadable too)."""
    try:
        data = read_source(str(path))
    except FileNotFoundError:
        raise ImageRejected("failed_missing", f"file not found: {path}") from None
    except OSError as exc:
        raise ImageRejected("failed_read", f"cannot read {path}: {exc}") from None
    return process_image(data, settings)


def process_image(data: bytes, settings: ImageSettings) -> EncodedImage:
    """Turn the bytes of one image file into the encoded shard image.

    Raises ImageRejected with status failed_empty, failed_unsupported, failed_too_large,
    failed_corrupt or skipped_animated.
    """
    prepared = prepare_picture(data, settings)
    try:
        encoded = encode(prepared.picture, settings)
    except (OSError, ValueError) as exc:
        raise ImageRejected("failed_corrupt", f"cannot encode: {_describe(exc)}") from None
    return EncodedImage(encoded, *prepared.picture.size, *prepared.original)


@dataclass(frozen=True)
class Prepared:
    """A picture in the model's input geometry, and the (oriented) size of its source."""

    picture: Image.Image  # RGB, geometry.canvas of plan_geometry
    original: tuple[int, int]


def prepare_picture(data: bytes, settings: ImageSettings) -> Prepared:
    """The one image preparation: the bytes of an image file -> the RGB picture a model sees.

    EXIF orientation applied; palette, CMYK, 16-bit and 1-bit converted; resized by
    ``settings.resize_mode`` to ``settings.size`` (never enlarged without ``upscale``); alpha
    composited onto white; padded or cropped onto the canvas. ``make-shards`` encodes this
    picture into the shard; ``tag`` feeds it to the model, with the settings of the shards the
    run learnt from (recorded as ``preparation`` in the run's config.json).

    Raises ImageRejected as :func:`process_image` does.
    """
    with _pillow_guards(settings):
        return _prepare(data, settings)


@contextmanager
def _pillow_guards(settings: ImageSettings) -> Iterator[None]:
    """Pillow's bomb limit at ``max_pixels`` and truncated files as errors, then restored."""
    limit, truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = settings.max_pixels, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = limit, truncated


def _prepare(data: bytes, settings: ImageSettings) -> Prepared:
    im = _open_checked(data, settings)
    try:
        orientation = _orientation(im)
        swap = orientation in (5, 6, 7, 8)
        width, height = im.size
        shown = (height, width) if swap else (width, height)
        geometry = plan_geometry(*shown, settings)
        src = _source_space(geometry, swap)
        picture = _decode(im, data, src, settings)
        picture = _resize(picture, (width, height), src)
        picture = _flatten(picture)
        if orientation in _TRANSPOSE:
            picture = picture.transpose(_TRANSPOSE[orientation])
        if picture.size != geometry.canvas:
            canvas = Image.new("RGB", geometry.canvas, BACKGROUND)
            canvas.paste(picture, geometry.offset)
            picture = canvas
        if picture is im:  # nothing changed it: keep the pixels past im.close()
            picture = im.copy()
    except ImageRejected:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
            MemoryError, IndexError, TypeError, struct.error) as exc:
        raise ImageRejected("failed_corrupt", f"cannot decode: {_describe(exc)}") from None
    finally:
        im.close()
    return Prepared(picture, shown)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]


def _open_checked(data: bytes, settings: ImageSettings) -> Image.Image:
    """Open ``data`` lazily after the guards; the header is read, no pixel is decoded.

    Call it inside ``_pillow_guards(settings)``, as :func:`process_image` does.

    Raises ImageRejected: failed_empty, failed_unsupported, failed_too_large (header size over
    ``max_pixels``, Pillow's bomb check included), failed_corrupt, skipped_animated.
    """
    if not data:
        raise ImageRejected("failed_empty", "empty file (0 bytes)")
    kind = sniff(data)
    if kind is None:
        raise ImageRejected("failed_unsupported", f"not an image file (starts with {data[:8]!r})")
    if kind not in IMAGE_TYPES:
        raise ImageRejected("failed_unsupported", f"not an image: {kind} file")
    try:
        im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(_header_size(data) or (0, 0), settings, exc) from None
    except Exception as exc:  # any parser error of a hostile header is a per-file failure
        if kind == "avif" and "AVIF" not in ALLOWED_FORMATS:
            raise ImageRejected("failed_unsupported", "AVIF support missing in Pillow") from None
        raise ImageRejected("failed_corrupt", f"cannot open: {_describe(exc)}") from None
    width, height = im.size
    if width < 1 or height < 1:
        raise ImageRejected("failed_corrupt", f"image has size {width}x{height}")
    if width * height > settings.max_pixels:
        raise _too_large((width, height), settings)
    animated = im.format != "MPO" and getattr(im, "is_animated", False)  # MPO: camera stereo
    if animated and settings.animated == "skip":
        frames = getattr(im, "n_frames", 2)
        raise ImageRejected("skipped_animated", f"animated {im.format} ({frames} frames)")
    return im


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header alone, Pillow's bomb check off (nothing is decoded)."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as im:
            return im.size
    except Exception:
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _too_large(size: tuple[int, int], settings: ImageSettings,
               exc: Exception | None = None) -> ImageRejected:
    width, height = size
    if not width:
        return ImageRejected("failed_too_large", _describe(exc or ValueError("too large")))
    return ImageRejected(
        "failed_too_large",
        f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
        f"{settings.max_pixels:,} (--max-pixels); not decoded")


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # broken EXIF is not worth rejecting the picture for
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _source_space(geometry: Geometry, swap: bool) -> Geometry:
    """The geometry in the stored (not yet rotated) pixel orientation."""
    if not swap:
        return geometry
    flip = lambda pair: (pair[1], pair[0])  # noqa: E731
    return Geometry(flip(geometry.scaled), flip(geometry.crop), flip(geometry.canvas),
                    flip(geometry.offset))


def _wanted_decode_size(size: tuple[int, int], src: Geometry) -> tuple[int, int]:
    """Smallest decoded size that keeps DECODE_MARGIN x the output over the cropped region."""
    return tuple(
        min(full, math.ceil(DECODE_MARGIN * out * full / crop))
        for full, out, crop in zip(size, src.scaled, src.crop, strict=True)
    )


def _power_of_two_factor(size: tuple[int, int], wanted: tuple[int, int]) -> int:
    for factor in (8, 4, 2):
        if all(math.ceil(full / factor) >= need for full, need in zip(size, wanted, strict=True)):
            return factor
    return 1


def _decode(im: Image.Image, data: bytes, src: Geometry, settings: ImageSettings) -> Image.Image:
    """Decode fully into one of L, RGB, LA, RGBA; JPEGs at a reduced DCT scale."""
    if im.format in ("JPEG", "MPO"):
        wanted = _wanted_decode_size(im.size, src)
        factor = _power_of_two_factor(im.size, wanted)
        if settings.jpeg_decoder == "simplejpeg" and im.mode in ("RGB", "L"):
            try:
                return _decode_simplejpeg(data, im.size, factor, im.mode)
            except ValueError:  # what libjpeg-turbo refuses, Pillow may read; else it raises
                pass
        if factor > 1:
            im.draft(None, (im.size[0] // factor, im.size[1] // factor))  # Pillow floors
    im.load()
    return _normalise_mode(im)


def _decode_simplejpeg(data: bytes, size: tuple[int, int], factor: int, mode: str) -> Image.Image:
    width, height = (math.ceil(s / factor) for s in size)
    colorspace = "GRAY" if mode == "L" else "RGB"
    array = simplejpeg.decode_jpeg(data, colorspace, min_width=width, min_height=height)
    if colorspace == "GRAY":
        array = array[:, :, 0]
    return Image.fromarray(array, mode)


def _normalise_mode(im: Image.Image) -> Image.Image:
    """Convert any decoded mode to L, RGB, LA or RGBA (alpha kept for premultiplied resizing)."""
    mode = im.mode
    if mode in ("L", "RGB", "LA", "RGBA"):
        if "transparency" in im.info and mode in ("L", "RGB"):
            return im.convert("RGBA")
        return im
    if mode.startswith("I;16") or mode == "I":
        array = np.asarray(im).astype(np.int64)
        return Image.fromarray((np.clip(array, 0, 65535) >> 8).astype(np.uint8), "L")
    if mode == "F":
        return Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), "L")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        return im.convert("RGBA" if has_alpha else "RGB")
    if mode in ("RGBa", "La"):
        return im.convert("RGBA")
    if mode == "1":
        return im.convert("L")
    return im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


def _resize(picture: Image.Image, full: tuple[int, int], src: Geometry) -> Image.Image:
    """Resize the (possibly DCT-reduced) picture to ``src.scaled`` over the centred crop."""
    w, h = picture.size
    if src.crop == full:
        if (w, h) == src.scaled:
            return picture
        box = (0.0, 0.0, float(w), float(h))
    else:
        cw, ch = min(w, src.crop[0] * w / full[0]), min(h, src.crop[1] * h / full[1])
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    return picture.resize(src.scaled, RESAMPLE, box=box, reducing_gap=REDUCING_GAP)


def _flatten(picture: Image.Image) -> Image.Image:
    """RGB, with any alpha composited onto the white background."""
    if picture.mode in ("RGBA", "LA"):
        rgba = picture.convert("RGBA")
        out = Image.new("RGB", picture.size, BACKGROUND)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return picture if picture.mode == "RGB" else picture.convert("RGB")


def encode(picture: Image.Image, settings: ImageSettings) -> bytes:
    """Encode an RGB picture as JPEG (4:2:0, no metadata) or WebP (method 4)."""
    out = io.BytesIO()
    if settings.format == "jpg":
        picture.save(out, "JPEG", quality=settings.quality, subsampling="4:2:0")
    elif settings.format == "webp":
        picture.save(out, "WEBP", quality=settings.quality, method=4)
    else:
        raise ValueError(f"unknown output format {settings.format!r}")
    return out.getvalue()
