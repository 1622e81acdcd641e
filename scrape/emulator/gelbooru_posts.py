"""Gelbooru 0.2 post objects and the dialect table (gelbooru.com, safebooru.org).

Everything that differs between the two sites is a row of `Dialect`; gelbooru.py serves both.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from aiohttp import web

from .render import PREVIEW_BOX, SAMPLE_WIDTH
from .world import IMAGE_EXTS, Post

MAX_OFFSET = 20_000
TOO_DEEP = "Too deep! Pull it back some. Holy fuck."
AUTH_REASON = ("Search error: Please use your API key. Currently you have exceeded maximum "
               "queries per day. Yukkuri Shiteitte ne! :<")
XML_HEAD = '<?xml version="1.0" encoding="UTF-8"?>'
RATING_WORDS = {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}
BUCKET = 1000                   # safebooru: ids per numbered file directory
EASTERN = ZoneInfo("America/New_York")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_INT = re.compile(r"^\s*(-?\d+)")
FILE_PREFIX = {"images": "", "samples": "sample_", "thumbnails": "thumbnail_"}
FILE_VARIANT = {"images": "original", "samples": "sample", "thumbnails": "preview"}


# -- small pure helpers ----------------------------------------------------------------------
def to_int(text: str | None, default: int) -> int:
    m = _INT.match(text or "")
    return int(m.group(1)) if m else default


def escape_text(text: str) -> str:
    """PHP htmlspecialchars(ENT_QUOTES), as the sites store tags and sources."""
    return html.escape(text, quote=True).replace("&#x27;", "&#039;")


def _word(flag: bool) -> str:
    return "true" if flag else "false"


def created_at(post: Post) -> str:
    """`Sat Sep 26 03:51:09 -0500 2026` (US Eastern, English names whatever the locale)."""
    t = post.created.astimezone(EASTERN)
    return (f"{_DAYS[t.weekday()]} {_MONTHS[t.month - 1]} {t.day:02d} {t:%H:%M:%S} {t:%z} "
            f"{t.year}")


def has_sample(post: Post) -> bool:
    return post.has_sample and post.file_ext in IMAGE_EXTS


def sha1_name(seed: int, post_id: int) -> str:
    """Safebooru's 40-hex file stem (not the md5)."""
    return hashlib.sha1(f"{seed}:{post_id}".encode()).hexdigest()


# -- post renderings -------------------------------------------------------------------------
def post_facts(post: Post, md5: str, base: str, d: Dialect, seed: int) -> dict:
    """What every rendering needs beyond the post: file places, sizes, made-up counters."""
    ext, sample = post.file_ext, has_sample(post)
    scale = min(1.0, PREVIEW_BOX / max(post.width, post.height))
    f = {"sample": sample, "pw": max(1, round(post.width * scale)),
         "ph": max(1, round(post.height * scale)),
         "sw": SAMPLE_WIDTH if sample else 0,
         "sh": round(post.height * SAMPLE_WIDTH / post.width) if sample else 0,
         "change": int(post.created_at) + (post.id * 7919) % 3_000_000,
         "comments": (post.id * 31) % 7 if post.id % 4 == 0 else 0,
         "notes": post.id % 23 == 0, "tags": escape_text(" ".join(post.tag_list))}
    if d.bucket_files:
        directory, stem = post.id // BUCKET + 1, sha1_name(seed, post.id)
        file_url = f"{base}/images/{directory}/{stem}.{ext}"
        return {**f, "directory": directory, "image": f"{stem}.{ext}", "file_url": file_url,
                "sample_url": (f"{base}/samples/{directory}/sample_{stem}.jpg?{post.id}"
                               if sample else file_url),
                "preview_url": f"{base}/thumbnails/{directory}/thumbnail_{stem}.jpg?{post.id}"}
    directory = f"{md5[0:2]}/{md5[2:4]}"
    return {**f, "directory": directory,
            "image": f"{md5}.{'webm' if ext == 'mp4' else ext}",   # the transcode's name
            "file_url": f"{base}/images/{directory}/{md5}.{ext}",
            "sample_url": f"{base}/samples/{directory}/sample_{md5}.jpg" if sample else "",
            "preview_url": f"{base}/thumbnails/{directory}/thumbnail_{md5}.jpg"}


def gelbooru_post(post: Post, md5: str, f: dict, d: Dialect) -> dict:
    """gelbooru.com's post object (JSON, and the child elements of its XML)."""
    return {
        "id": post.id, "created_at": created_at(post), "score": post.score,
        "width": post.width, "height": post.height, "md5": md5,
        "directory": f["directory"], "image": f["image"], "rating": RATING_WORDS[post.rating],
        "source": escape_text(post.source), "change": f["change"],
        "owner": f"user_{post.uploader_id}", "creator_id": post.uploader_id,
        "parent_id": post.parent_id or 0, "sample": int(f["sample"]),
        "preview_height": f["ph"], "preview_width": f["pw"], "tags": f["tags"], "title": "",
        "has_notes": _word(f["notes"]), "has_comments": _word(f["comments"] > 0),
        "file_url": f["file_url"], "preview_url": f["preview_url"],
        "sample_url": f["sample_url"], "sample_height": f["sh"], "sample_width": f["sw"],
        "status": post.status, "post_locked": 0, "has_children": _word(post.has_children),
    }


def safebooru_post(post: Post, md5: str, f: dict, d: Dialect) -> dict:
    """safebooru.org's JSON post: `hash`, bool `sample`, null `score`, no `created_at`."""
    urls = {"preview_url": f["preview_url"], "sample_url": f["sample_url"],
            "file_url": f["file_url"]} if d.include_file_url else {}
    return {
        **urls, "directory": f["directory"], "hash": md5, "width": post.width,
        "height": post.height, "id": post.id, "image": f["image"], "change": f["change"],
        "owner": f"user_{post.uploader_id}", "parent_id": post.parent_id or 0,
        "rating": RATING_WORDS[post.rating], "sample": f["sample"], "sample_height": f["sh"],
        "sample_width": f["sw"], "score": post.score or None, "tags": f["tags"],
        "source": escape_text(post.source), "status": post.status, "has_notes": f["notes"],
        "comment_count": f["comments"],
    }


def safebooru_xml_post(post: Post, md5: str, f: dict, d: Dialect) -> dict:
    """The 0.2.0 XML post's attributes: `md5`, padded `tags`, `parent_id=""` for none."""
    return {
        "height": post.height, "score": post.score or "", "file_url": f["file_url"],
        "parent_id": post.parent_id or "", "sample_url": f["sample_url"],
        "sample_width": f["sw"], "sample_height": f["sh"], "preview_url": f["preview_url"],
        "rating": RATING_WORDS[post.rating], "tags": f" {f['tags']} ", "id": post.id,
        "width": post.width, "change": f["change"], "md5": md5,
        "creator_id": post.uploader_id, "has_children": _word(post.has_children),
        "created_at": created_at(post), "status": post.status, "source": escape_text(post.source),
        "has_notes": _word(f["notes"]), "has_comments": _word(f["comments"] > 0),
        "preview_width": f["pw"], "preview_height": f["ph"],
    }


# -- the dialect table -----------------------------------------------------------------------
Render = Callable[[Post, str, dict, "Dialect"], dict]


@dataclass
class Dialect:
    """One site of the family; GELBOORU and SAFEBOORU below are everything that differs."""

    name: str                       # URL prefix
    max_limit: int                  # page size cap (default 100 on both)
    envelope: bool                  # JSON {"@attributes", "post"}; else a bare array, and an
                                    # empty body (0 bytes) when there is nothing
    attribute_xml: bool             # XML data in attributes (0.2.0) or in child elements
    bucket_files: bool              # files at {id bucket}/{sha1 stem} or at ab/cd/{md5}
    ratings: frozenset[str] | None  # the only ratings the site has
    needs_auth: bool                # honours Emulator.gelbooru_auth
    json_post: Render
    xml_post: Render
    include_file_url: bool = True   # knob: False drops the three URLs from JSON posts
    spurious_empty: float = 0.0     # knob: see the module docstring
    single_post_object: bool = False    # knob: `"post": {...}` for a one-post page
    legacy_hash: bool = False       # knob: JSON before 2021, the md5 in `hash`, not `md5`
    repeat_tag: bool = False        # knob: the first tag listed twice, as a real 0.2 site does


GELBOORU = Dialect("gelbooru", max_limit=100, envelope=True, attribute_xml=False,
                   bucket_files=False, ratings=None, needs_auth=True,
                   json_post=gelbooru_post, xml_post=gelbooru_post)
SAFEBOORU = Dialect("safebooru", max_limit=1000, envelope=False, attribute_xml=True,
                    bucket_files=True, ratings=frozenset("g"), needs_auth=False,
                    json_post=safebooru_post, xml_post=safebooru_xml_post)
DIALECT = web.AppKey("dialect", Dialect)
