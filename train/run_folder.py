"""`train --out RUN`: a run folder is never reused without being asked.

    claim_run_folder(Path("run"), resume=False, overwrite=False)   # TrainError if run/ has files

An empty or missing folder is taken as it is. A folder with files is refused unless the flags
say what to do with it: ``--resume`` continues the run in it, ``--overwrite`` deletes the old
run's files first (so no old ``model.safetensors`` or checkpoint can survive beside a new
``config.json``). ``--overwrite`` deletes only what a run writes; a folder holding anything
else is refused even then, so a mistyped ``--out ~/`` deletes nothing.
"""

from __future__ import annotations

import fnmatch
import logging
import shutil
from pathlib import Path

from .errors import TrainError

log = logging.getLogger(__name__)

# What `train` (and `train report`) write into a run folder.
RUN_FILES = ("config.json", "tags.csv", "metrics.csv", "metrics.png", "eval.json",
             "model.safetensors", "model.onnx", "samples-rank*.txt", ".*.tmp")
RUN_FOLDERS = ("checkpoints", "report", "tensorboard", "wd-tagger")


def _is_run_entry(entry: Path) -> bool:
    patterns = RUN_FOLDERS if entry.is_dir() else RUN_FILES
    return any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in patterns)


def claim_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Make ``out`` ready for a new run, or refuse: raise TrainError (exit 2) when it holds
    files and neither ``resume`` nor ``overwrite`` is set, or when ``overwrite`` would have to
    delete files a run did not write. With ``overwrite``, the old run's files are deleted."""
    if resume and overwrite:
        raise TrainError("--resume continues the run in --out and --overwrite deletes it: "
                         "give one of them")
    if resume or not out.is_dir():
        if out.exists() and not out.is_dir():
            raise TrainError(f"--out {out}: a file is in the way, not a folder")
        return
    entries = sorted(out.iterdir(), key=lambda e: (e.name != "model.safetensors", e.name))
    if not entries:
        return
    if not overwrite:
        shown = ", ".join(e.name for e in entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise TrainError(f"--out {out} already holds a run ({shown}): add --resume to continue "
                         "it, --overwrite to delete it and start again, or choose another "
                         "folder")
    foreign = [e.name for e in entries if not _is_run_entry(e)]
    if foreign:
        raise TrainError(f"--out {out}: --overwrite deletes only a run's files, and this "
                         f"folder also holds {', '.join(foreign[:4])}"
                         f"{', ...' if len(foreign) > 4 else ''}; choose another folder")
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    log.info("--overwrite: deleted the old run in %s", out)
