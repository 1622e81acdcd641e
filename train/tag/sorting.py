"""`tag --sort-into DIR`: copy (or move) images into one folder per class.

    sorter = Sorter(Path("sorted"), move=False, apply=False)    # a dry run: nothing changes
    sorter.add(Path("in/a.jpg"), "mona")     # -> sorted/mona/a.jpg (or a_1.jpg when taken)
    sorter.add(Path("in/sub/b.jpg"), "mona", Path("sub/b.jpg"))   # -> sorted/mona/sub/b.jpg

A binary run sorts into `<positive>/` and `not_<positive>/`, a multiclass run into one folder
per class; a file found in a subfolder of an input folder keeps that subfolder under its class
folder. Nothing is ever overwritten: a name already taken (on disk, or earlier in this run)
gets a `_1`, `_2`, ... suffix, and files are created exclusively, so a race cannot clobber
either. A file whose identical copy (same size and SHA-256) already holds its name or one of
those suffixed names is not copied again (a rerun of the same sort copies nothing), and with
`move` its source is removed. Nothing is deleted except, with `move`, the source of a file
that is now in its folder. A sidecar (the image's caption file) goes along with its image,
renamed to match.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cli_kit.disk_full import no_space, writing
from shards.format import sha256_file

log = logging.getLogger(__name__)


def folder_name(label: str) -> str:
    """A class name as one safe path component."""
    name = "".join("_" if c in "/\\\0" else c for c in label).strip()
    return "_" if name in ("", ".", "..") else name


def relative_path(image: Path, inputs: list[Path]) -> Path:
    """`image`'s path under the input folder it was found in (``sub/x.png`` for
    ``in/sub/x.png`` found in ``in/``); its bare name when it was named as a file."""
    for root in inputs:
        if root.is_dir() and image.is_relative_to(root):
            return image.relative_to(root)
    return Path(image.name)


@dataclass
class Sorter:
    dest: Path
    move: bool = False
    apply: bool = False
    sidecar_suffix: str | None = ".txt"
    keep: int | None = None              # remember this many (source, target) pairs to show
    planned: list[tuple[Path, Path]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    present: int = 0                     # identical copies already in place, not copied again
    _taken: set[Path] = field(default_factory=set)

    def add(self, image: Path, label: str, relative: Path | None = None) -> Path | None:
        """Plan (and with `apply`, do) the copy or move of `image` into the `label` folder, at
        `relative` (its path under the input folder; default: its name) inside it.

        Returns the destination, or None when the file system refused (recorded in failed)."""
        folder = self.dest / folder_name(label)
        place = folder / (relative.parent if relative is not None else Path())
        same = self._identical_in_place(place, image)
        if same is not None:
            self.present += 1
            if self.apply and self.move and not same.samefile(image):
                image.unlink()
            return same
        for _ in range(100):
            target = self._free_name(place, image)
            self._taken.add(target)
            if not self.apply:
                break
            try:
                with writing(target):
                    self._transfer(image, target)
                break
            except FileExistsError:      # appeared since we looked: take the next name
                continue
            except OSError as exc:
                if no_space(exc) is not None:     # every file after it would fail too: stop
                    raise
                self.failed.append((image, f"{type(exc).__name__}: {exc}"))
                log.warning("cannot %s %s to %s: %s", self.verb, image, target, exc)
                return None
        if self.keep is None or len(self.planned) < self.keep:
            self.planned.append((image, target))
        self.counts[folder.name] += 1
        return target

    @property
    def verb(self) -> str:
        return "move" if self.move else "copy"

    def _identical_in_place(self, folder: Path, image: Path) -> Path | None:
        """The file in `folder` under `image`'s name (or a `_N` variant of it) with the same
        bytes, if there is one: the image was sorted there before."""
        stem, suffix = image.stem, image.suffix
        try:
            size = image.stat().st_size
        except OSError:
            return None
        digest = None
        for n in range(100_000):
            target = folder / f"{stem if n == 0 else f'{stem}_{n}'}{suffix}"
            if not target.exists():
                if n == 0:
                    continue
                return None
            if target not in self._taken and target.stat().st_size == size:
                digest = digest or sha256_file(image)
                if sha256_file(target) == digest:
                    return target
        return None

    def _free_name(self, folder: Path, image: Path) -> Path:
        stem, suffix = image.stem, image.suffix
        for n in range(100_000):
            name = stem if n == 0 else f"{stem}_{n}"
            target = folder / f"{name}{suffix}"
            clash = [target]
            if self.sidecar_suffix:
                clash.append(target.with_suffix(self.sidecar_suffix))
            if not any(p in self._taken or p.exists() for p in clash):
                return target
        raise FileExistsError(f"no free name for {image.name} in {folder}")

    def _transfer(self, image: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        _place(image, target, self.move)
        sidecar = image.with_suffix(self.sidecar_suffix) if self.sidecar_suffix else None
        if sidecar is not None and sidecar.is_file() and sidecar != image:
            try:
                _place(sidecar, target.with_suffix(self.sidecar_suffix), self.move)
            except OSError as exc:
                log.warning("cannot %s %s along with its image: %s", self.verb, sidecar, exc)


def _place(src: Path, dst: Path, move: bool) -> None:
    """Copy or move `src` to `dst`, which must not exist (FileExistsError if it does)."""
    if move:
        try:
            os.link(src, dst)            # atomic and never overwrites; same file system only
        except FileExistsError:
            raise
        except OSError:
            _copy_exclusive(src, dst)
        src.unlink()
        return
    _copy_exclusive(src, dst)


def _copy_exclusive(src: Path, dst: Path) -> None:
    with src.open("rb") as fin:
        try:
            with dst.open("xb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        except FileExistsError:
            raise
        except BaseException:
            dst.unlink(missing_ok=True)
            raise
    shutil.copystat(src, dst)
