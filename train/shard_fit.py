"""Whether the shards fit what the run was asked to do, said before any step is trained.

    positive = binary_positive(tags, settings.positive)    # the class a binary run learns
    check_classes(tags, task)                              # multiclass: two classes at least
    note_image_size(manifest, settings.image_size)         # one warning when sizes differ
"""

from __future__ import annotations

import logging

from .errors import TrainError

log = logging.getLogger(__name__)
RATING = 9                                   # tags.csv category of the rating rows


def binary_positive(tags: list[dict], positive: str | None) -> str:
    """The class a ``--task binary`` run learns: ``positive``, or else the first row of
    ``tags.csv``, said in a warning. Raises TrainError when ``positive`` is no row of the
    index, or when it was not given and the first row is a rating (a rating is no class)."""
    names = [t["name"] for t in tags]
    if positive is not None:
        if positive not in names:
            raise TrainError(f"--positive {positive!r} is not a tag of the shards")
        return positive
    if not tags:
        raise TrainError("--task binary: the tag index is empty")
    first = tags[0]
    choices = [t["name"] for t in tags if int(t.get("category") or 0) != RATING][:5]
    if int(first.get("category") or 0) == RATING:
        raise TrainError(f"--task binary needs --positive CLASS: the first row of tags.csv is "
                         f"the rating {first['name']!r}, not a class (for example "
                         f"{', '.join(choices) or 'none'})")
    log.warning("--task binary without --positive: the positive class is %r, the first row "
                "of tags.csv (--positive CLASS to choose another)", first["name"])
    return first["name"]


def check_classes(tags: list[dict], task: str) -> None:
    """Raise TrainError when a multiclass run has fewer than two classes to tell apart (a
    folder of images in one subfolder: every prediction would be right, and nothing learnt)."""
    if task == "multiclass" and len(tags) < 2:
        names = ", ".join(t["name"] for t in tags) or "none"
        raise TrainError(f"--task multiclass: the shards have {len(tags)} class ({names}); a "
                         "classifier needs two at least (make-shards --folder: one subfolder "
                         "per class, or caption files for a multilabel run)")


def note_image_size(manifest: dict, image_size: int) -> None:
    """Warn once when the run trains at another side than the shards' pictures were made at
    (each picture is then resized on every step; `tag` prepares pictures as the shards were)."""
    image = manifest.get("image") or {}
    made = image.get("size")
    if not isinstance(made, int) or made == image_size:
        return
    log.warning("--image-size %d differs from the shards' %d px pictures: each picture is "
                "resized to %d px as it is read (shards made at %d px, or --image-size %d, "
                "avoid the resizing)", image_size, made, image_size, image_size, made)
