"""Caption files for LoRA and fine-tune trainers: one `<image stem>.txt` beside each image.

    caption(tags, CaptionStyle(underscores_to_spaces=True, character_first=True, trigger="mona"))
    -> "mona, hatsune miku, 1girl, long hair, ^_^"

The format kohya's sd-scripts and its GUIs read: tags joined by ", " on one line, best first.
Underscores become spaces only in tags longer than three characters, so emoticons such as
`^_^` and `>_<` keep theirs (sd-scripts' `--remove_underscore` rule). `escape_parentheses`
writes `\\(` and `\\)` (and `\\\\`) for captions meant to be pasted as A1111 prompts; it is off by
default because trainers read the brackets literally.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cli_kit.disk_full import writing
from shards.atomic import write_text_atomic

from ..runs import CHARACTER, NEGATIVE, RATING, Tag

RATING_PLACES = ("omit", "first", "last")


@dataclass(frozen=True)
class CaptionStyle:
    underscores_to_spaces: bool = False
    escape_parentheses: bool = False
    character_first: bool = False
    rating: str = "omit"              # omit | first | last: where the rating tag goes
    trigger: str | None = None        # a leading word (a LoRA's trigger), written as given
    extension: str = ".txt"


def format_tag(name: str, style: CaptionStyle) -> str:
    """One tag as it appears in a caption."""
    if style.underscores_to_spaces and len(name) > 3:
        name = name.replace("_", " ")
    if style.escape_parentheses:
        name = name.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return name


def caption(tags: Iterable[Tag], style: CaptionStyle) -> str:
    """The caption line of one image from its selected tags (best first).

    Order: trigger word, rating (when `first`), character tags (with `character_first`), the
    other tags by score, rating (when `last`). A binary run's `not_<class>` label is left out."""
    tags = sorted((t for t in tags if t.category != NEGATIVE), key=lambda t: -t.score)
    ratings = [t for t in tags if t.category == RATING][:1]
    rest = [t for t in tags if t.category != RATING]
    if style.character_first:
        rest = ([t for t in rest if t.category == CHARACTER]
                + [t for t in rest if t.category != CHARACTER])
    ordered = [format_tag(t.name, style) for t in rest]
    if style.rating == "first":
        ordered = [format_tag(t.name, style) for t in ratings] + ordered
    elif style.rating == "last":
        ordered += [format_tag(t.name, style) for t in ratings]
    if style.trigger:
        ordered.insert(0, style.trigger.strip())
    words = [" ".join(w.split()) for w in ordered]       # one line: no newlines or tabs inside
    return ", ".join(dict.fromkeys(w for w in words if w))


def caption_path(image: Path, style: CaptionStyle) -> Path:
    return image.with_suffix(style.extension)


def write_caption(image: Path, text: str, style: CaptionStyle, overwrite: bool = False) -> str:
    """Write the caption file beside `image`: "written", "replaced", or "kept" (it existed and
    `overwrite` is off). The file appears whole or not at all (temporary file, then rename).
    Raises OSError when the folder is not writable."""
    path = caption_path(image, style)
    existed = path.exists()
    if existed and not overwrite:
        return "kept"
    with writing(path):
        write_text_atomic(path, text + "\n", durable=False)  # as cheap to redo as to fsync
    return "replaced" if existed else "written"
