"""The output folder of ``make-shards``: lock, resume check, manifest.

A folder is *resumable* when its ``manifest.json`` has the same ``build`` record: the settings
that shape the output, the tag index's sha256 and the digest of the planned samples. Anything
else is refused (SettingsError for other settings or input, InputError for a folder that is not
a shard folder) unless ``overwrite``, which deletes only what make-shards writes. A run holds an
``flock`` on ``.make-shards.lock`` so two runs never write the same folder; the kernel drops it
when the process dies, so kill -9 never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from shards.errors import ManifestError
from shards.format import FORMAT_NAME, MANIFEST, SPLITS, TAGS
from shards.manifest import complete as complete_manifest
from shards.manifest import new_manifest, read_manifest

from ..errors import InputError, SettingsError
from ..imaging import ImageSettings
from ..split import SPLIT_RULE
from .first_pass import FIRST_PASS_DIR
from .plan import Plan

log = logging.getLogger(__name__)

LOCK = ".make-shards.lock"  # flock'ed while a run writes; stays behind, empty
@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Create ``out`` and hold its lock. Raises InputError when another run holds it."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    with (out / LOCK).open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another make-shards run is writing to {out}") from None
        yield


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two build records, for a one-line error message."""
    before, after = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) == after.get(key) or key == "samples":
            continue
        if key == "plan_sha256":
            changes.append(f"the selected posts or their metadata changed ({before.get('samples')}"
                           f" samples then, {after.get('samples')} now)")
        elif key == "tags_sha256":
            changes.append("the tag index changed")
        else:
            changes.append(f"{key}: {before.get(key)!r} then, {after.get(key)!r} now")
    return "; ".join(changes[:6]) or "unknown difference"


def clear_output(out: Path) -> None:
    """Delete what make-shards writes in ``out`` (nothing else)."""
    for split in SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)
    for name in (MANIFEST, TAGS):
        (out / name).unlink(missing_ok=True)
    remove_temporaries(out)


def remove_temporaries(out: Path) -> None:
    """Delete the temporary files of a killed run (``.<name>.<pid>.tmp``, shards.atomic's
    names) beside the manifest and in the splits; ``out`` is locked, so none is in use."""
    for folder in (out, *(out / split for split in SPLITS)):
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)


INPUT_FIELDS = ("tags_sha256", "plan_sha256", "samples")  # the build record's input side


def refuse_other_settings(out: Path, build: dict[str, Any], overwrite: bool) -> None:
    """Before the first pass (which decodes every picture): raise SettingsError when ``out``
    holds shards built with other settings than ``build`` (a build record; INPUT_FIELDS are
    not compared), unless ``overwrite``. Anything else is left to :func:`prepare_output`."""
    if overwrite or not (out / MANIFEST).is_file():
        return
    try:
        old = read_manifest(out)
    except ManifestError:
        return
    if old.get("format") != FORMAT_NAME or not isinstance(old.get("build"), dict):
        return
    before, now = ({k: v for k, v in record.items() if k not in INPUT_FIELDS}
                   for record in (old["build"], build))
    if before != now:
        raise _other_build(out, before, now)


def _other_build(out: Path, old: dict[str, Any], new: dict[str, Any]) -> SettingsError:
    return SettingsError(f"{out} holds shards built differently: "
                         f"{describe_difference(old, new)}. Rerun with the original "
                         "arguments to resume, or add --overwrite to rebuild")


def prepare_output(out: Path, build: dict[str, Any], overwrite: bool) -> bool:
    """Make the (locked, existing) ``out`` ready; True when it resumes the same build.

    Raises SettingsError when ``out`` holds shards of another build and InputError when it
    holds something else, unless ``overwrite``.
    """
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            old = read_manifest(out)
        except ManifestError:
            old = {}
        if old.get("format") == FORMAT_NAME and old.get("build") == build:
            return True
        if not overwrite:
            if old.get("format") != FORMAT_NAME or not isinstance(old.get("build"), dict):
                raise InputError(f"{manifest} is not a shard manifest; choose another --out "
                                 "or add --overwrite")
            raise _other_build(out, old["build"], build)
        log.warning("--overwrite: deleting the shards in %s", out)
        clear_output(out)
    elif any(p.name not in (LOCK, FIRST_PASS_DIR) for p in out.iterdir()):
        if not overwrite:
            raise InputError(f"{out} is not empty and has no {MANIFEST}; choose a new or empty "
                             "--out, or add --overwrite")
        clear_output(out)
    return False


def manifest(out: Path, plan: Plan, build: dict[str, Any], *, task: str, tag_rows: int,
             tags_source: str, image: ImageSettings, complete: bool) -> dict[str, Any]:
    """The manifest; with ``complete`` it reads every shard's stats for counts and bytes."""
    result = new_manifest(
        shards={split: [(spec.name, len(spec.rows)) for spec in plan.shards
                        if spec.split == split] for split in SPLITS},
        task=task,
        tags={"file": TAGS, "sha256": build["tags_sha256"], "rows": tag_rows,
              "source": tags_source},
        image={**asdict(image), "background": "white", "channels": "RGB"},
        split_rule=SPLIT_RULE, selection=plan.counts, grouping=plan.grouping, build=build)
    return complete_manifest(out, result) if complete else result
