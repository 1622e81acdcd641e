"""Shared helpers of the make-shards and shards tests (no tests here): images, runs, readers.

    from support.shard_builds import make_shards, hostile_corpus, rows_of, snapshot
"""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from prep.cli import main

TINY = ["--image-size", "64", "--workers", "1", "-q"]


def documented_split(site: str, post_id: int, val_fraction: float) -> str:
    """The split the manifest's ``split`` rule gives an anchor (site, id), computed here from
    the rule's words (blake2b, 8 bytes, big-endian, / 2**64), not with prep's code."""
    digest = hashlib.blake2b(f"{site}:{post_id}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "big") / 2**64 < val_fraction else "train"


def make_shards(capsys, *argv: str) -> tuple[int, str]:
    """Run ``prep make-shards -q ...`` in-process; returns (exit code, stderr)."""
    code = main(["make-shards", *TINY, *argv])
    return code, capsys.readouterr().err.strip()


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def halves(size: tuple[int, int], first: tuple, second: tuple, mode: str = "RGB",
           vertical: bool = False) -> Image.Image:
    """An image whose left (or top) half is ``first`` and the other half ``second``."""
    im = Image.new(mode, size, first)
    w, h = size
    box = (0, h // 2, w, h) if vertical else (w // 2, 0, w, h)
    im.paste(Image.new(mode, (box[2] - box[0], box[3] - box[1]), second), box[:2])
    return im


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid-looking PNG header of ``width`` x ``height`` RGB with a tiny IDAT (a few bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def exif_rotated_jpeg() -> bytes:
    """40x20 stored, red left / blue right, EXIF orientation 6 (display rotated 90 deg CW)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(halves((40, 20), (255, 0, 0), (0, 0, 255)), "JPEG", quality=95,
                  exif=exif.tobytes())


def hostile_corpus(folder: Path) -> dict[str, str]:
    """Write the hostile files under ``folder/cls/``; returns file name -> expected status."""
    cls = folder / "cls"
    cls.mkdir(parents=True, exist_ok=True)
    good = encode(Image.new("RGB", (80, 60), (0, 128, 0)), "JPEG", quality=90)
    gray16 = Image.fromarray(np.full((30, 40), 32768, dtype=np.uint16))
    assert gray16.mode.startswith("I;16")
    palette = Image.new("P", (40, 40), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(0, (0, 0, 20, 40))  # left half: index 0, made transparent below
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    files = {
        "good.jpg": (good, "success"),
        "cmyk.jpg": (encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG",
                            quality=95), "success"),
        "gray16.png": (encode(gray16, "PNG"), "success"),
        "palette.png": (encode(palette, "PNG", transparency=0), "success"),
        "rotated.jpg": (exif_rotated_jpeg(), "success"),
        "truncated.jpg": (good[: len(good) // 2], "failed_corrupt"),
        "empty.jpg": (b"", "failed_empty"),
        "text.jpg": (b"this is not an image, just some text\n" * 4, "failed_unsupported"),
        "bomb.png": (png_bomb(), "failed_too_large"),
        "animated.gif": (encode(frames[0], "GIF", save_all=True, append_images=frames[1:],
                                duration=100, loop=0), "skipped_animated"),
    }
    for name, (data, _) in files.items():
        (cls / name).write_bytes(data)
    return {name: status for name, (_, status) in files.items()}


def rows_of(out: Path, split: str | None = None) -> list[dict]:
    """Every parquet row of the shards in ``out`` (one split or both), in shard order."""
    rows = []
    for path in sorted(out.glob(f"{split or '*'}/*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def members(tar_path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(tar_path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def snapshot(out: Path) -> dict[str, bytes]:
    """Bytes of every tar and parquet under ``out`` by relative path (stats hold timings)."""
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.rglob("*")) if p.suffix in (".tar", ".parquet")}


def write_images(folder: Path, count: int, size: tuple[int, int] = (96, 72),
                 fmt: str = "PNG", seed: int = 0) -> list[Path]:
    """``count`` distinct noisy images (so every md5 differs) named 000.png, 001.png, ..."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        path = folder / f"{i:03d}.{fmt.lower().replace('jpeg', 'jpg')}"
        params = {"compress_level": 1} if fmt == "PNG" else {}
        path.write_bytes(encode(Image.fromarray(pixels), fmt, **params))
        paths.append(path)
    return paths


# -- pause points (prep.pause): stop a build at an exact item, then kill it there ------------
def arm_pause(folder: Path, point: str, call: int) -> dict[str, str]:
    """Arm ``point`` to pause at its ``call``-th call in a process; the environment a build
    needs to see the arm (merged into ``os.environ``)."""
    import os

    from prep.pause import ENV

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{point}.arm").write_text(str(call))
    return {**os.environ, ENV: str(folder)}


def wait_paused(folder: Path, point: str, process=None, limit: float = 120.0) -> int:
    """The pid of the process paused at ``point``, once it is there. Polls a file the build
    writes when it pauses (which it then cannot pass): no race with the build's speed. Fails
    when ``process`` (a Popen) ends first, or after ``limit`` seconds (a broken pause)."""
    import time

    paused = folder / f"{point}.paused"
    deadline = time.monotonic() + limit
    while not paused.is_file():
        assert process is None or process.poll() is None, f"the build ended before {point}"
        assert time.monotonic() < deadline, f"nothing paused at {point} in {limit:.0f} s"
        time.sleep(0.01)
    return int(paused.read_text())
