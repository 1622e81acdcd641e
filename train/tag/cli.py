"""`tag` (also `python -m train tag`): tag images with a trained run.

    tag --model run/ ~/Pictures/unsorted                      # print the top tags of a few
    tag --model run/ pics/ --output tags.parquet --per-tag-thresholds
    tag --model run/ dataset/ --captions --underscores-to-spaces --trigger mona
    tag --model mona-run/ unsorted/ --sort-into sorted/       # dry run; --apply copies

Images are found in the folders given (recursively) and read on worker processes; unreadable
ones are reported and skipped. Thresholds: the run's evaluation threshold (0.4; 0.5 for a
binary run) unless --threshold or --per-tag-thresholds (eval.json's best-F1 ones) says
otherwise; --general-threshold and --character-threshold override them for those categories.
The rating (when tags.csv has rating rows) is the best of the four rating tags.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from cli_kit.command_line import (
    HelpFormatter,
    add_config_option,
    add_deprecated_alias,
    run_main,
)
from cli_kit.disk_full import no_space
from cli_kit.workers import LOADER_CAP, workers_argument
from prep.imaging import IMAGE_SUFFIXES
from prep.imaging import RESIZE_MODES as PREP_RESIZE_MODES
from shards.storage import fetch_files, is_object_url

from ..errors import TrainError
from ..precision import PRECISIONS
from ..runs import OLD_RESIZE_NAMES, LoadedRun, thresholds
from .captions import RATING_PLACES, CaptionStyle, caption, caption_path, write_caption
from .inference import input_images
from .output import EmbeddingTable, TagTable, check_table_path
from .selection import add_selection_flags, picker_from
from .sorting import Sorter, relative_path
from .wd_model import WdModel, load_model, predict_any

log = logging.getLogger(__name__)
COMMANDS = """commands:
  tag review IMAGES --model RUN   review and correct the tags in a browser (--help)"""
SHOW = 10                       # images whose tags are printed without --verbose


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tag", description=__doc__, epilog=COMMANDS,
                                formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, metavar="RUN",
                   help="a train run folder (config.json, tags.csv, model.safetensors), local "
                   "or an object-storage URL (s3://bucket/run/, fetched once), or a WD-tagger "
                   "folder (model.onnx, selected_tags.csv; needs onnxruntime)")
    p.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DIRS",
                   help="image files, and folders searched recursively")
    add_config_option(p)
    g = p.add_argument_group("thresholds")
    one = g.add_mutually_exclusive_group()
    one.add_argument("--threshold", type=float, metavar="X", help="one threshold for every tag")
    one.add_argument("--per-tag-thresholds", action="store_true",
                     help="each tag's best-F1 threshold on the validation split (eval.json)")
    g.add_argument("--general-threshold", type=float, metavar="X",
                   help="threshold of the general tags (default: as above)")
    g.add_argument("--character-threshold", type=float, metavar="Y",
                   help="threshold of the character tags (default: as above)")
    add_selection_flags(p)
    g = p.add_argument_group("outputs")
    g.add_argument("--output", type=Path, metavar="FILE",
                   help="table of tags and scores per image: .parquet, .csv or .jsonl")
    g.add_argument("--embed", type=Path, metavar="FILE.parquet",
                   help="pooled feature vector of each image (path, embedding)")
    g = p.add_argument_group("captions (a <image stem>.txt beside each image)")
    g.add_argument("--captions", action="store_true",
                   help="write each image's tags, comma-separated, into a caption file")
    g.add_argument("--underscores-to-spaces", action="store_true",
                   help="long_hair -> long hair (tags of 3 characters or fewer, like ^_^, kept)")
    g.add_argument("--escape-parentheses", action="store_true",
                   help=r"star_(symbol) -> star_\(symbol\) (for A1111 prompts)")
    g.add_argument("--character-first", action="store_true",
                   help="character tags before the general ones")
    g.add_argument("--rating", choices=RATING_PLACES, default="omit",
                   help="where the rating tag goes (omit: left out)")
    g.add_argument("--trigger", metavar="WORD", help="a leading word, e.g. a LoRA trigger")
    g.add_argument("--caption-extension", default=".txt", metavar="EXT",
                   help="caption file suffix (kohya's trainers read .caption unless told "
                   ".txt)")
    g.add_argument("--overwrite", action="store_true", help="replace existing caption files")
    g = p.add_argument_group("sorting (binary and multiclass runs)")
    g.add_argument("--sort-into", type=Path, metavar="DIR",
                   help="copy images into DIR/<class>/; a dry run unless --apply")
    g.add_argument("--move", action="store_true", help="move instead of copy")
    g.add_argument("--apply", action="store_true", help="do it (default: show what would)")
    g = p.add_argument_group("speed")
    g.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="images per forward pass")
    g.add_argument("--workers", **workers_argument("decoding processes", LOADER_CAP))
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="autocast dtype; auto: bf16 on a GPU that supports it, else fp16; fp32 "
                   "on the CPU")
    g.add_argument("--resize-mode", choices=("auto", *PREP_RESIZE_MODES), default="auto",
                   help="auto: as the run's training shards were made (pad when unknown); "
                   "else as prep make-shards --resize-mode")
    add_deprecated_alias(g, "--resize", "--resize-mode", "resize_mode",
                         convert=lambda mode: OLD_RESIZE_NAMES.get(mode, mode),
                         choices=("auto", "pad", "center_crop", *OLD_RESIZE_NAMES))
    p.add_argument("-v", "--verbose", action="store_true", help="print every image's tags, "
                   "log debug messages")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no per-image lines: only totals and problems")
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Usage errors that need no model: raise TrainError with a one-line message."""
    for name in ("threshold", "general_threshold", "character_threshold"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise TrainError(f"--{name.replace('_', '-')} must be between 0 and 1")
    if args.batch_size < 1:
        raise TrainError("--batch-size must be at least 1")
    if args.workers < 0:
        raise TrainError("--workers must be 0 or more")
    if not args.captions:
        used = [flag for flag, on in (
            ("--underscores-to-spaces", args.underscores_to_spaces),
            ("--escape-parentheses", args.escape_parentheses),
            ("--character-first", args.character_first), ("--rating", args.rating != "omit"),
            ("--trigger", args.trigger is not None), ("--overwrite", args.overwrite),
            ("--caption-extension", args.caption_extension != ".txt")) if on]
        if used:
            raise TrainError(f"{used[0]} is a caption option: add --captions")
    ext = args.caption_extension
    if not ext.startswith(".") or len(ext) < 2 or "/" in ext or ext.lower() in IMAGE_SUFFIXES:
        raise TrainError(f"--caption-extension {ext!r}: give a suffix such as .txt or .caption")
    if args.trigger is not None and not args.trigger.strip():
        raise TrainError("--trigger: the word is empty")
    if not args.sort_into and (args.move or args.apply):
        raise TrainError(f"{'--move' if args.move else '--apply'} goes with --sort-into DIR")
    if args.output:
        check_table_path(args.output, "--output")
    if args.embed:
        check_table_path(args.embed, "--embed", (".parquet",))


@dataclass
class Tally:
    """What happened to the images, for the closing summary."""

    args: argparse.Namespace
    run: LoadedRun
    sorter: Sorter | None
    count: Counter = field(default_factory=Counter)
    shown: list[tuple[Path, list]] = field(default_factory=list)
    seconds: float = 0.0

    def line(self, key: str, n: int = 1) -> None:
        self.count[key] += n


def run_folder(model: str) -> Path:
    """The run folder of ``--model``: a local path, or a URL fetched by shards/storage.py."""
    if not is_object_url(model):
        return Path(model)
    try:
        return fetch_files(model, ("config.json", "tags.csv", "model.safetensors"))
    except OSError as exc:
        raise TrainError(f"cannot fetch the run {model}: {exc}") from None


def tag_images(args: argparse.Namespace) -> Tally:
    check_flags(args)
    run = load_model(run_folder(args.model), device=args.device, precision=args.precision,
                     resize=args.resize_mode)
    if args.embed and isinstance(run, WdModel):
        run.check_embed()                # before a single image is looked for or read
    picker = picker_from(args, run.task)
    if args.sort_into and run.task == "multilabel":
        raise TrainError("--sort-into sorts by class: this run is multilabel; use a binary or "
                         "multiclass run (train --task binary|multiclass)")
    limits = thresholds(run, args.threshold, per_tag=args.per_tag_thresholds,
                        general=args.general_threshold, character=args.character_threshold)
    paths = input_images(args.inputs, [args.sort_into] if args.sort_into else [])
    roots = [Path(item) for item in args.inputs]
    if not paths:
        raise TrainError(f"no images found in {', '.join(map(str, args.inputs))} "
                         f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    style = CaptionStyle(args.underscores_to_spaces, args.escape_parentheses,
                         args.character_first, args.rating, args.trigger,
                         args.caption_extension)
    table = TagTable(args.output) if args.output else None
    vectors = EmbeddingTable(args.embed) if args.embed else None
    sorter = Sorter(args.sort_into, args.move, args.apply, style.extension,
                    None if args.verbose else SHOW) if args.sort_into else None
    tally, captioned = Tally(args, run, sorter), set()
    log.info("tagging %d images with %s (%s, %s, %d px, %s)", len(paths), run.path,
             run.config.get("model"), run.task, run.image_size, run.device)
    start = time.perf_counter()
    try:
        with tqdm(total=len(paths), unit="img", desc="tag",
                  disable=True if args.quiet else None) as bar:
            for batch in predict_any(run, paths, batch_size=args.batch_size,
                                     workers=args.workers, embed=bool(vectors)):
                rows = []
                for k, i in enumerate(batch.indices):
                    chosen = picker.pick(run, batch.scores[k], limits)
                    rows.append((i, {"path": str(paths[i]), "tags": [t.name for t in chosen],
                                     "scores": [t.score for t in chosen], "error": None}))
                    if len(tally.shown) < SHOW or args.verbose:
                        tally.shown.append((paths[i], chosen))
                    if args.captions:
                        _caption(paths[i], chosen, style, args.overwrite, captioned, tally)
                    if sorter is not None:
                        sorter.add(paths[i], chosen[0].name, relative_path(paths[i], roots))
                for i, error in batch.failed:
                    tally.line("unreadable")
                    print(f"tag: skipped {paths[i]}: {error}", file=sys.stderr)
                    rows.append((i, {"path": str(paths[i]), "tags": [], "scores": [],
                                     "error": error}))
                tally.line("images", len(rows))
                if table is not None:
                    table.write([row for _, row in sorted(rows, key=lambda r: r[0])])
                if vectors is not None and batch.indices:
                    vectors.write([str(paths[i]) for i in batch.indices], batch.embeddings)
                bar.update(len(rows))
    except BaseException:
        for writer in (table, vectors):
            if writer is not None:
                with contextlib.suppress(OSError):       # the first error is the one to say
                    writer.abort()
        raise
    try:
        for writer in (table, vectors):
            if writer is not None:
                writer.close()
    except BaseException:                # a full disk at the last write: no temporary stays
        for writer in (table, vectors):
            if writer is not None:
                with contextlib.suppress(OSError):
                    writer.abort()
        raise
    tally.seconds = time.perf_counter() - start
    return tally


def _caption(image: Path, chosen: list, style: CaptionStyle, overwrite: bool,
             captioned: set, tally: Tally) -> None:
    target = caption_path(image, style).resolve()
    if target in captioned:
        tally.line("captions_clash")
        print(f"tag: {image}: {target.name} already holds the caption of another image here; "
              "not written", file=sys.stderr)
        return
    captioned.add(target)
    try:
        tally.line("captions_" + write_caption(image, caption(chosen, style), style, overwrite))
    except OSError as exc:
        if no_space(exc) is not None:    # every caption after it would fail too: stop (exit 1)
            raise
        tally.line("captions_failed")
        print(f"tag: cannot write the caption of {image}: {exc}", file=sys.stderr)


def report(tally: Tally) -> None:
    """The closing summary on stdout: a few images' tags, then one line per output."""
    args, run, c = tally.args, tally.run, tally.count
    if not args.quiet:
        for path, chosen in tally.shown:
            tags = ", ".join(f"{t.name} {t.score:.2f}" for t in chosen[:12])
            print(f"{path}: {tags or '(no tag over the threshold)'}")
        if c["images"] - c["unreadable"] > len(tally.shown):
            print(f"... and {c['images'] - c['unreadable'] - len(tally.shown)} more")
    rate = c["images"] / tally.seconds if tally.seconds > 0 else float("inf")
    unread = f"; {c['unreadable']} unreadable, skipped" if c["unreadable"] else ""
    print(f"tag: {c['images']} images in {tally.seconds:.1f} s, {rate:.1f} images/s "
          f"({run.device.type} {run.precision}, batch {args.batch_size}, {args.workers} "
          f"workers){unread}")
    if args.output:
        print(f"tag: wrote {args.output} ({c['images']} rows)")
    if args.embed:
        print(f"tag: wrote {args.embed} ({c['images'] - c['unreadable']} vectors)")
    if args.captions:
        parts = [f"{c['captions_' + k]} {k}" for k in ("written", "replaced", "kept", "clash",
                                                       "failed") if c["captions_" + k]]
        hint = " (existing files; --overwrite replaces them)" if c["captions_kept"] else ""
        print(f"tag: captions ({args.caption_extension}): {', '.join(parts) or 'none'}{hint}")
    if tally.sorter is not None:
        _report_sort(tally.sorter, args)


def _report_sort(sorter: Sorter, args: argparse.Namespace) -> None:
    verb = sorter.verb if args.apply else f"would {sorter.verb}"
    if not args.quiet or not args.apply:
        for src, dst in sorter.planned:
            print(f"  {verb} {src} -> {dst}")
        total = sum(sorter.counts.values())
        if total > len(sorter.planned):
            print(f"  ... and {total - len(sorter.planned)} more")
    folders = ", ".join(f"{n} -> {name}/" for name, n in sorted(sorter.counts.items()))
    if args.apply:
        done = "moved" if args.move else "copied"
        failed = f"; {len(sorter.failed)} failed" if sorter.failed else ""
        present = (f"; {sorter.present} already there (identical), not copied again"
                   if sorter.present else "")
        print(f"tag: sort-into {args.sort_into}: {done} {folders or 'nothing'}{present}"
              f"{failed}")
    else:
        present = f"; {sorter.present} already there (identical)" if sorter.present else ""
        print(f"tag: sort-into {args.sort_into} (dry run, nothing changed): "
              f"{folders or 'nothing'}{present}; --apply to {sorter.verb} them")


def run_tag(args: argparse.Namespace) -> int:
    """Tag the images the flags name and print the summary; the exit code."""
    tally = tag_images(args)
    report(tally)
    failed = tally.count["captions_failed"] + (len(tally.sorter.failed) if tally.sorter else 0)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Run `tag` (or `tag review`); the exit code (0 ok, 1 a caption or sorted file could not
    be written or the disk is full, 2 usage or input error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["review"]:
        from .review.cli import main as review_main
        return review_main(argv[1:])
    return run_main("tag", build_parser(), argv, run_tag, (TrainError,),
                    interrupted="interrupted; no table was written (captions and sorted files "
                    "so far stay)")
