"""Which tags `tag` keeps for an image, beyond the thresholds: the options caption tools offer.

    tag --model run/ pics/ --top-k 20                 # at most 20 tags of each category
    tag --model run/ pics/ --mcut                     # the WD taggers' maximum-cut threshold
    tag --model run/ pics/ --mcut general --exclude "solo,simple_background" \\
        --replace "1girl=woman" --captions

Order of work for one image: thresholds (or MCut) per category, then the best rating, then
--top-k per category, then --exclude, then --replace. Categories are those of tags.csv
(0 general, 1 artist, 3 copyright, 4 character, 5 meta, 9 rating); the rating stays one best
choice and is never cut by --top-k or --mcut.

MCut as the WD v3 taggers' reference code (SmilingWolf's wd-tagger app.py, and
dghs-imgutils' `_mcut_threshold`) computes it: sort the scores of the category descending,
find the largest drop between neighbours, cut halfway down it, keep the scores strictly
above the cut; for characters the cut is at least 0.15.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TrainError
from ..runs import RATING, Tag, select

MCUT_CHOICES = ("all", "general", "character")
CHARACTER_MCUT_FLOOR = 0.15          # the reference code's floor for the character cut
MCUT_CATEGORIES = {"general": (0,), "character": (4,)}


def mcut_threshold(scores: np.ndarray) -> float:
    """The maximum-cut threshold of one image's scores: the midpoint of the largest gap
    between neighbouring sorted scores. With fewer than two scores there is no gap: one
    score is kept (its own value is returned, for a >= comparison), none gives +inf."""
    if len(scores) == 0:
        return float("inf")
    if len(scores) == 1:
        return float(scores[0])
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    gaps = ordered[:-1] - ordered[1:]
    t = int(np.argmax(gaps))
    return float((ordered[t] + ordered[t + 1]) / 2)


def mcut_limits(scores: np.ndarray, categories: np.ndarray, limits: np.ndarray,
                which: str) -> np.ndarray:
    """`limits` with the thresholds of the MCut categories replaced by each category's cut.

    `which` is all, general or character. The reference keeps scores strictly over the cut;
    `select` keeps scores at or over the limit, so the limit is the next float above it."""
    out = np.array(limits, dtype=np.float64)
    cats = np.unique(categories[categories != RATING]) if which == "all" \
        else MCUT_CATEGORIES[which]
    for cat in cats:
        members = categories == cat
        if not members.any():
            continue
        cut = mcut_threshold(scores[members])
        if cat == 4:
            cut = max(cut, CHARACTER_MCUT_FLOOR)
        out[members] = np.nextafter(cut, np.inf) if len(scores[members]) > 1 else cut
    return out


def top_k(tags: list[Tag], k: int) -> list[Tag]:
    """At most `k` tags of each category (ratings untouched), the best ones; order kept."""
    seen: dict[int, int] = {}
    kept = []
    for t in sorted(tags, key=lambda t: -t.score):
        if t.category != RATING:
            seen[t.category] = seen.get(t.category, 0) + 1
            if seen[t.category] > k:
                continue
        kept.append(t)
    keep = set(kept)
    return [t for t in tags if t in keep]


def _forms(name: str) -> set[str]:
    """A tag as tags.csv writes it and as captions often do (underscores as spaces)."""
    return {name, name.replace("_", " ")}


def clean(tags: list[Tag], exclude: set[str], replace: dict[str, str]) -> list[Tag]:
    """Drop the tags named in `exclude` and rename those in `replace` (either spelling,
    long_hair or long hair, matches); a rename onto a name already present drops the copy."""
    out, names = [], set()
    for t in tags:
        if _forms(t.name) & exclude:
            continue
        new = next((replace[f] for f in _forms(t.name) if f in replace), t.name)
        if new in names:
            continue
        names.add(new)
        out.append(t._replace(name=new))
    return out


def parse_replace(items: list[str]) -> dict[str, str]:
    """['old=new', ...] -> {old: new}; raises TrainError on a malformed pair."""
    pairs = {}
    for item in items:
        old, sep, new = item.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise TrainError(f"--replace {item!r}: give OLD=NEW, e.g. 1girl=woman")
        pairs[old.strip()] = new.strip()
    return pairs


def parse_exclude(text: str | None, file: Path | None) -> set[str]:
    """Tags from a comma-separated list and from a file (one per line or comma-separated)."""
    names = [n for n in (text or "").split(",")]
    if file is not None:
        try:
            names += file.read_text(encoding="utf-8").replace("\n", ",").split(",")
        except OSError as exc:
            raise TrainError(f"--exclude-file {file}: {exc.strerror or exc}") from None
    return {n.strip() for n in names if n.strip()}


@dataclass
class Picker:
    """Selection settings of one `tag` command; `pick` applies them to one image."""

    top_k: int | None = None
    mcut: str | None = None
    exclude: set[str] = field(default_factory=set)
    replace: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.top_k or self.mcut or self.exclude or self.replace)

    def pick(self, run, scores: np.ndarray, limits: np.ndarray) -> list[Tag]:
        """The labels of one image, best first: `select` with these options applied."""
        if self.mcut:
            limits = mcut_limits(scores, run.categories, limits, self.mcut)
        chosen = select(run, scores, limits)
        if self.top_k:
            chosen = top_k(chosen, self.top_k)
        if self.exclude or self.replace:
            chosen = clean(chosen, self.exclude, self.replace)
        return chosen


def add_selection_flags(p: argparse.ArgumentParser) -> None:
    """The selection flags of `tag`, as one argument group."""
    g = p.add_argument_group("selection (multilabel models)")
    g.add_argument("--top-k", type=int, metavar="N",
                   help="at most N tags of each category per image, best first (default: all "
                   "over the threshold)")
    g.add_argument("--mcut", nargs="?", const="all", choices=MCUT_CHOICES,
                   help="maximum-cut threshold per image, as the WD taggers offer, instead of "
                   "the thresholds: for all categories (bare --mcut), general or character "
                   "(default: off)")
    g.add_argument("--exclude", metavar="TAGS",
                   help="comma-separated tags never to output (default: none)")
    g.add_argument("--exclude-file", type=Path, metavar="FILE",
                   help="tags never to output, one per line (default: none)")
    g.add_argument("--replace", action="append", default=[], metavar="OLD=NEW",
                   help="rename a tag in the output; repeatable (default: none)")


def picker_from(args: argparse.Namespace, task: str) -> Picker:
    """The Picker of parsed `tag` flags. Raises TrainError on a usage error."""
    if args.top_k is not None and args.top_k < 1:
        raise TrainError("--top-k must be at least 1")
    if args.mcut and (args.threshold is not None or args.per_tag_thresholds):
        raise TrainError("--mcut replaces the thresholds: leave out --threshold and "
                         "--per-tag-thresholds")
    mcut_overridden = {"all": ("general", "character"), "general": ("general",),
                       "character": ("character",)}.get(args.mcut or "", ())
    for cat in mcut_overridden:
        if getattr(args, f"{cat}_threshold") is not None:
            raise TrainError(f"--mcut {args.mcut} replaces --{cat}-threshold: give one")
    picker = Picker(args.top_k, args.mcut, parse_exclude(args.exclude, args.exclude_file),
                    parse_replace(args.replace))
    if picker.active and task != "multilabel":
        raise TrainError("--top-k, --mcut, --exclude and --replace are for multilabel models "
                         f"(this one is {task})")
    return picker
