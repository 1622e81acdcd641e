"""What a downloaded body really is, from its magic bytes (never from the URL or the API)."""

from __future__ import annotations

IMAGE_TYPES = frozenset({"jpg", "png", "gif", "webp", "avif", "bmp"})  # sniff() kinds: images


def sniff(data: bytes) -> str | None:
    """The file type of `data` as an extension, or None when it is not a known format."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "avif" if brand in (b"avif", b"avis") else "mp4"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:3] in (b"FWS", b"CWS", b"ZWS"):
        return "swf"
    return None


def looks_like_html(data: bytes, content_type: str) -> bool:
    if content_type.startswith("text/"):
        return True
    start = data[:256].lstrip().lower()
    return start.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body"))
