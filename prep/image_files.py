"""Which files of a folder are pictures: one rule for every command that reads a folder.

``prep make-shards --folder``, ``tag DIR`` and ``tag review DIR`` all list a folder's images with
:func:`find_images` (or, for a folder given as a URL, filter its listing with
:func:`is_image_name`): the files with an image suffix (:data:`.imaging.IMAGE_SUFFIXES`, any
case), recursively, leaving out hidden files and everything under hidden folders (names
starting with ``.``, such as ``.review/`` or ``.DS_Store``), sorted by their POSIX path relative
to the folder.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from .imaging import IMAGE_SUFFIXES


def is_image_name(relative: str) -> bool:
    """True for a POSIX path relative to a folder that names a visible image file."""
    path = PurePosixPath(relative)
    return (path.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in path.parts))


def find_images(root: Path) -> list[Path]:
    """The image files under the folder ``root`` (see the module docstring), sorted by
    relative POSIX path."""
    root = Path(root)
    found = {p.relative_to(root).as_posix(): p for p in root.rglob("*")}
    return [found[name] for name in sorted(found)
            if is_image_name(name) and found[name].is_file()]
