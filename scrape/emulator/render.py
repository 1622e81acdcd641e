"""Render a post's files: the image shows the post's visual tags.

Pure functions of `(post, seed, object count)`: the same post always gives the same bytes, so
the md5 the API reports is the md5 of what the file server sends. Backgrounds, patterns, shapes,
object counts, borders and monochrome are drawn with Pillow at the post's full size.
Non-image formats (mp4, webm, ugoira zip, swf) get small stand-in files with the right magic bytes.
"""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from . import vocab as V

SAMPLE_WIDTH = 850
PREVIEW_BOX = 180
_PALETTE = [(230, 30, 30), (30, 90, 230), (30, 180, 60), (250, 210, 0), (160, 40, 200),
            (255, 120, 0), (0, 200, 200), (240, 240, 240), (20, 20, 20), (255, 105, 180)]


def render_image(post, seed: int, n_objects: int) -> Image.Image:
    """The post's picture as an RGB (or RGBA) Pillow image at its full size."""
    rng = np.random.default_rng([seed, 4, post.id])
    general = set(post.tags[V.GENERAL])
    w, h = post.width, post.height
    bg_name = next((t for t in V.BACKGROUND_COLOURS if t in general), "white_background")
    bg = V.BACKGROUND_COLOURS[bg_name]
    im = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(im)
    _pattern(draw, rng, w, h, bg, next((t for t in V.BACKGROUND_PATTERNS if t in general), None))
    kinds = [s for s in V.SHAPES if s in general] or ["circle"]
    colours = [c for c in _PALETTE if _distance(c, bg) > 120]
    unit = min(w, h)
    size = unit / (3.2 + 0.55 * n_objects)
    for k in range(n_objects):
        kind = kinds[k % len(kinds)]
        r = size * rng.uniform(0.75, 1.0) / 2
        cx, cy = _place(rng, k, n_objects, w, h, r)
        colour = colours[int(rng.integers(len(colours)))]
        _shape(draw, kind, cx, cy, r, colour, bg)
    if "border" in general:
        bw = max(2, unit // 30)
        draw.rectangle((0, 0, w - 1, h - 1), outline=(10, 10, 10), width=bw)
    if "monochrome" in general:
        im = ImageOps.grayscale(im).convert("RGB")
    if post.rgba:
        alpha = Image.new("L", (w, h), 255)
        ImageDraw.Draw(alpha).rectangle((0, 0, w - 1, h - 1), outline=96, width=max(1, unit // 40))
        im.putalpha(alpha)
    return im


def reupload(im: Image.Image, size: tuple[int, int], edited: bool) -> Image.Image:
    """A re-upload of a picture: resized to ``size``; ``edited`` adds a small signature box."""
    if im.size != size:
        im = im.resize(size, Image.Resampling.BICUBIC)
    if edited:
        im = im.copy()
        w, h = size
        box = (w - w // 6, h - h // 14, w - w // 40, h - h // 40)  # a signature: ~0.6 %
        draw = ImageDraw.Draw(im)
        draw.rectangle(box, fill=(250, 250, 250), outline=(40, 40, 40))
        y = (box[1] + box[3]) // 2
        draw.line((box[0] + 2, y, box[2] - 2, y), fill=(40, 40, 40))
    return im


def _distance(a, b) -> float:
    return math.dist(a, b)


def _place(rng, k: int, n: int, w: int, h: int, r: float) -> tuple[float, float]:
    """Spread objects on a jittered grid so they never overlap (counts stay countable)."""
    cols = math.ceil(math.sqrt(n * w / h))
    rows = math.ceil(n / cols)
    cw, ch = w / cols, h / rows
    cx = (k % cols + 0.5) * cw + rng.uniform(-1, 1) * max(0.0, cw / 2 - r) * 0.6
    cy = (k // cols + 0.5) * ch + rng.uniform(-1, 1) * max(0.0, ch / 2 - r) * 0.6
    return cx, cy


def _pattern(draw, rng, w: int, h: int, bg, name: str | None) -> None:
    if name is None:
        return
    ink = tuple(int(c * 0.6) if sum(bg) > 300 else min(255, c + 90) for c in bg)
    step = max(8, min(w, h) // 12)
    if name == "striped_background":
        for x in range(-h, w, step * 2):
            draw.polygon([(x, 0), (x + step, 0), (x + step + h, h), (x + h, h)], fill=ink)
    elif name == "polka_dot_background":
        for y in range(step // 2, h, step):
            for x in range(step // 2, w, step):
                draw.ellipse((x - step / 6, y - step / 6, x + step / 6, y + step / 6), fill=ink)
    elif name == "checkered_background":
        for y in range(0, h, step):
            for x in range((y // step) % 2 * step, w, step * 2):
                draw.rectangle((x, y, x + step - 1, y + step - 1), fill=ink)
    elif name == "grid_background":
        for x in range(0, w, step):
            draw.line((x, 0, x, h), fill=ink, width=max(1, step // 10))
        for y in range(0, h, step):
            draw.line((0, y, w, y), fill=ink, width=max(1, step // 10))
    elif name == "gradient_background":
        for y in range(0, h, 4):
            t = y / max(h - 1, 1)
            draw.rectangle((0, y, w, y + 3), fill=tuple(int(c * (1 - 0.6 * t)) for c in bg))


def _shape(draw, kind: str, cx: float, cy: float, r: float, colour, bg) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        s = r * 0.85
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=colour)
    elif kind == "triangle":
        draw.polygon(_regular(cx, cy, r, 3, -90), fill=colour)
    elif kind == "diamond_(shape)":
        draw.polygon([(cx, cy - r), (cx + r * 0.6, cy), (cx, cy + r), (cx - r * 0.6, cy)],
                     fill=colour)
    elif kind == "star_(symbol)":
        outer, inner = _regular(cx, cy, r, 5, -90), _regular(cx, cy, r * 0.4, 5, -54)
        draw.polygon([p for pair in zip(outer, inner, strict=True) for p in pair], fill=colour)
    elif kind == "cross":
        t = r * 0.3
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=colour)
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=colour)
    elif kind == "crescent":
        draw.ellipse(box, fill=colour)
        d = r * 0.45
        draw.ellipse((cx - r + d, cy - r - d * 0.3, cx + r + d, cy + r - d * 0.3), fill=bg)
    elif kind == "heart":
        q = r * 0.52
        draw.ellipse((cx - 2 * q, cy - r * 0.75, cx, cy - r * 0.75 + 2 * q), fill=colour)
        draw.ellipse((cx, cy - r * 0.75, cx + 2 * q, cy - r * 0.75 + 2 * q), fill=colour)
        draw.polygon([(cx - 1.95 * q, cy - r * 0.75 + q * 1.2), (cx + 1.95 * q,
                      cy - r * 0.75 + q * 1.2), (cx, cy + r)], fill=colour)


def _regular(cx: float, cy: float, r: float, n: int, start_deg: float) -> list[tuple]:
    return [(cx + r * math.cos(math.radians(start_deg + 360 * i / n)),
             cy + r * math.sin(math.radians(start_deg + 360 * i / n))) for i in range(n)]


def encode(im: Image.Image, ext: str, post_id: int) -> bytes:
    """Encode an image in the post's format; the comment makes every file's bytes unique."""
    out = io.BytesIO()
    comment = f"booru-tagger emulator post {post_id}"
    if ext == "jpg":
        im.convert("RGB").save(out, "JPEG", quality=90, comment=comment)
    elif ext == "png":
        from PIL import PngImagePlugin
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", comment)
        im.save(out, "PNG", compress_level=1, pnginfo=info)
    elif ext == "webp":
        im.save(out, "WEBP", quality=80, method=0)
    elif ext == "gif":
        frames = [im.convert("RGB").quantize(64), ImageOps.invert(im.convert("RGB")).quantize(64)]
        frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=200,
                       loop=0, comment=comment)
    else:
        raise ValueError(f"not an image format: {ext}")
    return out.getvalue()


def stand_in(ext: str, post_id: int) -> bytes:
    """A small file with the right magic bytes for formats the emulator does not draw."""
    body = f"booru-tagger emulator post {post_id}".encode() * 8
    if ext == "mp4":
        return b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + body
    if ext == "webm":
        return b"\x1a\x45\xdf\xa3" + body
    if ext == "swf":
        return b"FWS\x0a" + body
    if ext == "zip":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            for i in range(2):
                info = zipfile.ZipInfo(f"{i:06d}.jpg", date_time=(2020, 1, 1, 0, 0, 0))
                zf.writestr(info, body)
        return out.getvalue()
    raise ValueError(f"no stand-in for {ext}")


def resized(im: Image.Image, box: tuple[int, int]) -> Image.Image:
    im = im.convert("RGB")
    im.thumbnail(box, Image.Resampling.BILINEAR)
    return im
