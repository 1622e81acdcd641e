"""The neutral `Post` every site adapter produces, and the rules for trusting its fields.

Nothing from an API response becomes a path component unchecked: an md5 must be 32 hex
characters, an extension must come from the whitelist (or, after download, from the magic bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from .filetype import IMAGE_TYPES

RATINGS = ("general", "sensitive", "questionable", "explicit")
CATEGORIES = ("general", "character", "copyright", "artist", "meta")
IMAGE_EXTS = IMAGE_TYPES  # what a download may be (scrape/filetype.py)
KNOWN_EXTS = IMAGE_EXTS | {"jpeg", "mp4", "webm", "zip", "swf", "mkv", "mov"}
_MD5 = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Post:
    """One post as the sites describe it, before anything is downloaded."""

    site: str
    id: int
    md5: str | None
    file_ext: str | None
    file_url: str | None
    sample_url: str | None
    source: str | None
    rating: str | None
    score: int | None
    width: int | None
    height: int | None
    file_size: int | None
    created_at: datetime | None
    tags: list[str]
    categories: dict[str, list[str]] | None = None   # None: the site did not say
    deleted: bool = False
    banned: bool = False
    parent_id: int | None = None                     # the family's parent post (same site)
    has_children: bool | None = None                 # None: the site did not say
    extra: dict = field(default_factory=dict)        # site-specific, never written

    def __post_init__(self) -> None:
        # Some sites list a tag twice (a Gelbooru 0.2 site does): keep the first of each.
        self.tags = unique(self.tags)
        if self.categories is not None:
            self.categories = {c: unique(names) for c, names in self.categories.items()}
        if self.file_ext is None:
            self.file_ext = ext_from_url(self.file_url)


def unique(names: list[str]) -> list[str]:
    """The names without repeats, in their first order."""
    return list(dict.fromkeys(names))


def ext_from_url(url: str | None) -> str | None:
    """A whitelisted extension from a URL's path (`.../abc.png?123` gives png), else None.

    For sites whose posts carry no `file_ext` (Konachan, Gelbooru); the bytes decide later.
    """
    if not url:
        return None
    path = urlsplit(url).path
    name = path.rsplit("/", 1)[-1]
    return safe_ext(name.rsplit(".", 1)[1]) if "." in name else None


def valid_md5(value) -> str | None:
    """The md5 lowercased if it is 32 hex characters, else None."""
    if isinstance(value, str) and _MD5.match(value.strip().lower()):
        return value.strip().lower()
    return None


def safe_ext(value) -> str | None:
    """A whitelisted extension (`jpeg` becomes `jpg`), else None."""
    if not isinstance(value, str):
        return None
    ext = value.strip().lower().lstrip(".")
    if ext not in KNOWN_EXTS:
        return None
    return "jpg" if ext == "jpeg" else ext


def rating_word(value) -> str | None:
    """Normalise a site's rating to general|sensitive|questionable|explicit.

    Danbooru's letters g/s/q/e, Gelbooru's words, and Moebooru's s/q/e (where `s` means safe,
    today's general + sensitive, mapped to general as Danbooru did before 2022).
    """
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    return {"g": "general", "general": "general", "safe": "general", "s": "sensitive",
            "sensitive": "sensitive", "q": "questionable", "questionable": "questionable",
            "e": "explicit", "explicit": "explicit"}.get(text)


def parent_id(value) -> int | None:
    """A parent post id: a positive int; None for 0, "", null or garbage (no parent)."""
    number = as_int(value)
    return number if number is not None and number > 0 else None


def as_flag(value) -> bool | None:
    """A boolean from JSON true/false, the strings "true"/"false" or 0/1; None otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    return {"true": True, "1": True, "false": False, "0": False}.get(text)


def as_int(value) -> int | None:
    """An int from an int, float or numeric string; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None
