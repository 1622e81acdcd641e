"""The state of a folder under review: its images, their captions and the model's scores.

A caption is read from `<image stem>.txt` (tags split on commas, as `prep make-shards
--folder` reads them) with a version, the SHA-256 of the file's bytes ("" when there is
none). An edit names the version it was made on; when the file changed on disk since, the edit
is refused as a conflict and the current caption comes back, so nothing is overwritten
silently. A saved edit replaces the caption atomically and appends a line to
`.review/corrections.jsonl` (time, image, added, removed, the caption written).

A tag is *known* when it names a row of the model's tags.csv in any caption spelling (spaces
or underscores, escaped parentheses: `prep.labels.tag_key`, the rule `prep make-shards` matches
captions by); an unknown tag is saved when asked, but it is no label when retraining, so the
state and every edit list the unknown tags.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from prep.folder_input import parse_caption
from prep.image_files import find_images
from prep.labels import tag_key

from ..captions import CaptionStyle, caption_path, format_tag, write_caption

REVIEW_DIR = ".review"
CORRECTIONS = "corrections.jsonl"


@dataclass
class Prediction:
    tags: list[str]           # the tags the model scored highest, best first
    scores: list[float]
    error: str | None         # the image could not be read


class ReviewStore:
    """Images under `root` with captions and predictions; `edit()` is the only writer."""

    def __init__(self, root: Path, *, predictions: dict[str, Prediction], names: list[str],
                 categories: dict[str, int], thresholds: dict[str, float],
                 style: CaptionStyle = CaptionStyle()):
        self.root = root
        self.images = find_images(root)
        self.relative = [p.relative_to(root).as_posix() for p in self.images]
        self.predictions = predictions
        self.names, self.categories, self.thresholds = names, categories, thresholds
        self.style = style
        self._by_key: dict[str, str] = {}
        for n in names:
            self._by_key.setdefault(tag_key(n), n)
        self._lock = threading.Lock()
        self.log_path = root / REVIEW_DIR / CORRECTIONS

    # -- reading ------------------------------------------------------------------------
    def known(self, tag: str) -> str | None:
        """The label-space name `tag` spells (None: tags.csv has no such row)."""
        return tag if tag in self.categories else self._by_key.get(tag_key(tag))

    def unknown(self, tags: list[str]) -> list[str]:
        """The tags of `tags` that name no row of the model's tags.csv."""
        return [t for t in tags if self.known(t) is None]

    def caption(self, i: int) -> tuple[list[str], str, str | None]:
        """(tags, version, error) of image `i`'s caption file; tags in the label space's
        spelling where the file writes them with spaces."""
        return self._read(i)[:3]

    def _read(self, i: int) -> tuple[list[str], str, str | None, CaptionStyle]:
        """caption() and the style to write the file back in: with spaces for underscores
        when the file writes a known tag that way (as `tag --underscores-to-spaces` does)."""
        path = caption_path(self.images[i], self.style)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return [], "", None, self.style
        except OSError as exc:
            return [], "unreadable", f"cannot read {path.name}: {exc}", self.style
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return ([], hashlib.sha256(data).hexdigest(), f"{path.name} is not UTF-8: {exc}",
                    self.style)
        written = parse_caption(text)
        tags = [self.known(t) or t for t in written]
        style = self.style
        respelt = [w for w, t in zip(written, tags, strict=True) if w != t]
        if any(" " in w for w in respelt):
            style = replace(style, underscores_to_spaces=True)
        if any("\\(" in w or "\\)" in w for w in respelt):
            style = replace(style, escape_parentheses=True)
        return tags, hashlib.sha256(data).hexdigest(), None, style

    def state(self, i: int) -> dict:
        """Everything the page shows of image `i`."""
        tags, version, caption_error = self.caption(i)
        pred = self.predictions.get(self.relative[i])
        predicted = []
        if pred is not None:
            predicted = [{"tag": t, "score": round(s, 4),
                          "category": self.categories.get(t, 0),
                          "threshold": self.thresholds.get(t, 0.5)}
                         for t, s in zip(pred.tags, pred.scores, strict=True)]
        margins = [abs(p["score"] - p["threshold"]) for p in predicted]
        return {"id": i, "path": self.relative[i], "caption": tags,
                "unknown": self.unknown(tags), "version": version,
                "caption_error": caption_error, "predicted": predicted,
                "error": pred.error if pred is not None else "not predicted",
                "uncertainty": round(min(margins), 4) if margins else 1.0}

    # -- writing ------------------------------------------------------------------------
    def edit(self, i: int, version: str, add: list[str], remove: list[str]) -> dict:
        """Add and remove tags on image `i`'s caption made at `version`.

        Returns {"status": "saved" | "unchanged" | "conflict" | "error", "image": state,
        "unknown": the added tags tags.csv does not know, "message"?}. Tags are taken in the
        label space's spelling when they name a row. Raises IndexError for an unknown image."""
        if not 0 <= i < len(self.images):
            raise IndexError(i)
        add = [self.known(t) or t for t in add]
        remove = [self.known(t) or t for t in remove]
        result = self._edit(i, version, add, remove)
        result["unknown"] = self.unknown(add)
        return result

    def _edit(self, i: int, version: str, add: list[str], remove: list[str]) -> dict:
        with self._lock:
            tags, current, error, style = self._read(i)
            if error:
                return {"status": "error", "message": error, "image": self.state(i)}
            if current != version:
                return {"status": "conflict", "image": self.state(i),
                        "message": f"{caption_path(self.images[i], self.style).name} changed "
                                   "on disk since it was loaded: reloaded, edit not saved"}
            drop = set(remove)
            new = [t for t in tags if t not in drop]
            new += [t for t in dict.fromkeys(add) if t not in new and t not in drop]
            if new == tags and current:
                return {"status": "unchanged", "image": self.state(i)}
            # a known tag in the file's spelling; an unknown one as it was written or typed
            text = ", ".join(format_tag(t, style) if self.known(t) else t for t in new)
            try:
                write_caption(self.images[i], text, self.style, overwrite=True)
                self._log({"time": round(time.time(), 3), "image": self.relative[i],
                           "added": [t for t in new if t not in tags],
                           "removed": [t for t in tags if t not in new], "caption": text})
            except OSError as exc:
                return {"status": "error", "message": f"cannot save: {exc}",
                        "image": self.state(i)}
            return {"status": "saved", "image": self.state(i)}

    def _log(self, entry: dict) -> None:
        self.log_path.parent.mkdir(exist_ok=True)
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)          # one write of one line: whole or not at all
            os.fsync(fd)
        finally:
            os.close(fd)
