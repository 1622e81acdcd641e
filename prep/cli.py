"""Command line of the prep stage: ``prep <command> ...`` (also ``python -m prep``).

Commands register themselves in :func:`build_parser` with an ``add_<command>`` function that
adds a subparser and sets ``handler`` (a function ``args -> exit code``). Every command takes
``-v/--verbose``, ``-q/--quiet`` and ``--config FILE.toml`` (keys are the long option names
with ``-`` or ``_``; flags given on the command line win). Expected errors (:class:`PrepError`)
become one line on stderr and exit code 2, as do usage errors.

    prep make-tag-index --posts raw/ --out tags.csv --top-k 5000
    prep make-shards --posts raw/ --tags tags.csv --out shards/
"""

from __future__ import annotations

import argparse
import logging
import textwrap
from collections.abc import Callable
from pathlib import Path

from cli_kit.command_line import HelpFormatter, add_config_option, run_main
from cli_kit.workers import workers_argument
from shards.storage import StorageError, is_object_url

from .curation import DEDUPE_POLICIES, NEAR_DISTANCE, Curation
from .errors import PrepError, SettingsError
from .filters import Filters, parse_ratings
from .folder_input import FOLDER_KINDS
from .imaging import ANIMATED_POLICIES, FORMATS, RESIZE_MODES, ImageSettings
from .make_shards import ShardJob, ShardSettings, make_shards, shards_summary
from .make_tag_index import TagIndexJob, make_tag_index
from .merge_shards import add_merge_shards
from .scale_options import add_scale_options, scale_options
from .tag_counts import CountSettings
from .tag_index import (
    DEFAULT_CATEGORIES,
    DEFAULT_EXCLUDE,
    IndexSettings,
    parse_categories,
    read_exclude,
)
from .tag_report import format_summary, report_paths

log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _common_options(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="log debug messages")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="only log warnings and errors; no progress bars or summary")
    add_config_option(parser, default)


def add_make_tag_index(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``make-tag-index``."""
    excluded = textwrap.fill(", ".join(DEFAULT_EXCLUDE), width=78, initial_indent="  ",
                             subsequent_indent="  ", break_on_hyphens=False)
    parser = commands.add_parser(
        "make-tag-index",
        help="count tags in posts metadata and write the tag index (tags.csv)",
        description="Count the tags of posts (posts parquet parts of a scrape, or a parquet / "
        "JSON-lines metadata dump with a 'tags' column) and write the tag index in the format "
        "of the WD taggers' selected_tags.csv, with a report and a frequency plot next to it "
        "(tags.csv -> tags.report.json, tags.report.png). Only posts with status 'downloaded' "
        "count unless --all-posts; input without a status column counts every row.",
        epilog=f"default --exclude list (meta tags; --no-default-exclude drops it):\n{excluded}",
        formatter_class=HelpFormatter,
    )
    _common_options(parser, argparse.SUPPRESS)
    parser.add_argument("--posts", nargs="+", required=True, metavar="PATH",
                        help="scrape output dir (reads posts/*.parquet), dir of parts, "
                        "or a .parquet / .jsonl file")
    parser.add_argument("--out", required=True, metavar="tags.csv", help="output CSV path")
    parser.add_argument("--top-k", type=_int_at_least(0), default=5000,
                        help="number of tags to keep, rating labels not included; 0 keeps all")
    parser.add_argument("--min-count", type=_int_at_least(1), default=1,
                        help="drop tags on fewer counted posts")
    parser.add_argument("--categories", default=",".join(DEFAULT_CATEGORIES),
                        help="comma list of categories to keep: general, character, copyright, "
                        "artist, meta")
    parser.add_argument("--exclude", action="append", default=[], metavar="FILE|TAGS",
                        help="tags to leave out: a file with one tag per line, or a comma list; "
                        "repeatable; added to the default list below")
    parser.add_argument("--no-default-exclude", action="store_true",
                        help="do not exclude the default meta tags")
    parser.add_argument("--min-tags-per-post", type=_int_at_least(0), default=0,
                        help="posts with fewer tags do not count")
    parser.add_argument("--include-ratings", action="store_true",
                        help="put the rating labels general, sensitive, questionable, explicit "
                        "(category 9) first, as in the WD taggers")
    parser.add_argument("--all-posts", action="store_true",
                        help="count every post, not only those with status 'downloaded'")
    parser.add_argument("--workers", **workers_argument("reader threads"))
    parser.add_argument("--batch-size", type=_int_at_least(1), default=65_536,
                        help="posts per record batch")
    parser.set_defaults(handler=run_make_tag_index)
    return parser


def run_make_tag_index(args: argparse.Namespace) -> int:
    """Handler of ``make-tag-index``."""
    job = TagIndexJob(
        posts=tuple(Path(p) for p in args.posts),
        out=Path(args.out),
        count=CountSettings(all_posts=args.all_posts, min_tags_per_post=args.min_tags_per_post,
                            batch_size=args.batch_size, workers=args.workers),
        index=IndexSettings(
            top_k=args.top_k, min_count=args.min_count,
            categories=parse_categories(args.categories),
            exclude=read_exclude(args.exclude, defaults=not args.no_default_exclude),
            include_ratings=args.include_ratings,
        ),
    )
    report = make_tag_index(job, progress=not args.quiet)
    if not args.quiet:
        json_path, png_path = report_paths(job.out)
        print(format_summary(report))
        print(f"wrote {job.out}, {json_path}, {png_path}")
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def _int_between(low: int, high: int) -> Callable[[str], int]:
    at_least = _int_at_least(low)

    def parse(text: str) -> int:
        value = at_least(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    return parse


def add_make_shards(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``make-shards``."""
    defaults = ImageSettings()
    parser = commands.add_parser(
        "make-shards",
        help="decode, resize and pack images with their labels into WebDataset shards",
        description="Write the shards (train/ and val/ tar + parquet pairs, manifest.json, a "
        "copy of tags.csv; docs/DESIGN.md, \"Boundary 3: shards (shards/)\") from a scrape "
        "(--posts raw/ --tags tags.csv: downloaded posts with an image) or from a folder "
        "(--folder DIR: class subfolders, or images beside .txt files of comma-separated tags). "
        "Output depends only on the input and the settings; rerunning an interrupted build "
        "with the same arguments finishes it. Unreadable, truncated, empty, oversized, animated "
        "or non-image files become parquet rows with a status and an error message.",
        epilog="examples:\n  prep make-shards --posts raw/ --tags tags.csv --out shards/\n"
        "  prep make-shards --folder pets/ --out pet-shards/ --image-size 256 --resize-mode "
        "center_crop",
        formatter_class=HelpFormatter,
    )
    _common_options(parser, argparse.SUPPRESS)
    source = parser.add_argument_group("input (--posts with --tags, or --folder)")
    source.add_argument("--posts", nargs="+", metavar="PATH",
                        help="scrape output dir (reads posts/*.parquet), dir of parts, or a "
                        ".parquet / .jsonl file, or the URL of one (s3://bucket/raw/: images "
                        "read from the bucket); image_path is relative to the scrape dir")
    source.add_argument("--tags", metavar="tags.csv",
                        help="tag index (prep make-tag-index); with --folder it replaces the "
                        "index built from the folder")
    source.add_argument("--folder", metavar="DIR",
                        help="images in class subfolders, or beside .txt caption files; a folder "
                        "or an object-storage URL (s3://bucket/pics/)")
    source.add_argument("--folder-kind", choices=FOLDER_KINDS, default="auto",
                        help="folder layout; auto = captions when any image has a .txt")
    source.add_argument("--top-k", type=_int_at_least(0), default=0,
                        help="folder tag index: keep the K most frequent labels; 0 keeps all")
    source.add_argument("--min-count", type=_int_at_least(1), default=1,
                        help="folder tag index: drop labels on fewer images")
    source.add_argument("--allow-unknown-tags", action="store_true",
                        help="--folder with --tags: build even when most distinct caption tags "
                        "match no row of tags.csv (they are left out of the labels)")
    source.add_argument("--images-root", metavar="DIR|URL",
                        help="directory or URL image_path is relative to (default: the scrape "
                        "dir holding posts/, else the posts file's dir)")
    parser.add_argument("--out", required=True, metavar="DIR|URL",
                        help="output shard folder, or an object-storage URL (s3://bucket/ds/, "
                        "gs://..., any fsspec URL: shards are built in --staging and uploaded "
                        "as they finish, the manifest last)")
    image = parser.add_argument_group("images")
    image.add_argument("--image-size", type=_int_at_least(8), default=defaults.size,
                       help="target side in pixels")
    image.add_argument("--resize-mode", choices=RESIZE_MODES, default=defaults.resize_mode,
                       help="pad: longest side to --image-size, padded to a white square; "
                       "keep_ratio: shortest side to --image-size; center_crop: shortest side, "
                       "then the centre square; none: keep the size")
    image.add_argument("--no-upscale", action="store_true",
                       help="never enlarge images smaller than the target")
    image.add_argument("--format", choices=FORMATS, default=defaults.format,
                       help="stored image format; jpg is 4:2:0 and decodes 3-4x faster than "
                       "webp")
    image.add_argument("--quality", type=_int_between(1, 100), default=defaults.quality,
                       help="JPEG / WebP quality")
    image.add_argument("--max-pixels", type=_int_at_least(1), default=defaults.max_pixels,
                       help="refuse images whose header says more pixels, before decoding "
                       "(decompression bombs)")
    image.add_argument("--animated", choices=ANIMATED_POLICIES, default=defaults.animated,
                       help="animated GIF/WebP/PNG: record as skipped_animated, or keep the "
                       "first frame")
    parser.add_argument("--samples-per-shard", type=_int_at_least(1), default=10_000,
                        help="samples per shard")
    parser.add_argument("--val-fraction", type=_fraction, default=0.02,
                        help="share of posts in val, by a hash of the (site, id) anchoring "
                        "each post's family/near-duplicate group")
    _curation_options(parser)
    parser.add_argument("--keep-untagged", action="store_true",
                        help="keep posts none of whose tags is in the index")
    parser.add_argument("--workers", **workers_argument(
        "image processes (--engine ray: the CPUs of a local Ray; 1 works in the main process "
        "too, as a single worker would only add a pipe)"))
    parser.add_argument("--num-nodes", type=_int_at_least(1), default=1,
                        help="split the build across machines: each builds every N-th shard "
                        "into its own --out, then `prep merge-shards` joins them")
    parser.add_argument("--node-rank", type=_int_at_least(0), default=0,
                        help="this machine's part, 0..N-1")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete shards in --out built with other arguments or input")
    add_scale_options(parser)
    parser.set_defaults(handler=run_make_shards)
    return parser


def _ratings(text: str) -> tuple[str, ...]:
    try:
        return parse_ratings(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _aspect(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (long side / short side), got {text}")
    return value


def _curation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("curation (families and near-duplicates always share a "
                                      "split)")
    group.add_argument("--dedupe", choices=DEDUPE_POLICIES, default="exact",
                       help="none; exact: drop repeated md5s; near: also keep one picture per "
                       "pHash group (the largest, then highest score), the others recorded as "
                       "skipped_near_duplicate")
    group.add_argument("--near-distance", type=_int_between(0, 16), default=NEAR_DISTANCE,
                       metavar="BITS", help="pHash bits (of 64) within which pictures are "
                       "near-duplicates")
    group.add_argument("--min-side", type=_int_at_least(0), default=0, metavar="PX",
                       help="leave out pictures whose shorter side is below PX "
                       "(0: off)")
    group.add_argument("--max-aspect", type=_aspect, default=0.0, metavar="R",
                       help="leave out pictures whose long side is more than R times the "
                       "short side (default: off)")
    group.add_argument("--exclude-tags", default="", metavar="TAGS",
                       help="comma list: leave out posts with any of these tags, e.g. "
                       "comic,text_focus,monochrome (default: none)")
    group.add_argument("--ratings", type=_ratings, default=(), metavar="LIST",
                       help="keep only these ratings, e.g. general,sensitive (default: all)")
    group.add_argument("--min-score", type=int, default=None, metavar="N",
                       help="leave out posts with a score below N or no score (default: off)")


def _root(text: str) -> Path | str:
    """An input folder or file: a Path, or an object-storage URL kept as text."""
    return text if is_object_url(text) else Path(text)


def run_make_shards(args: argparse.Namespace) -> int:
    """Handler of ``make-shards``."""
    job = ShardJob(
        posts=tuple(_root(p) for p in args.posts or ()),
        tags=Path(args.tags) if args.tags else None,
        folder=_root(args.folder) if args.folder else None,
        folder_kind=args.folder_kind, top_k=args.top_k, min_count=args.min_count,
        allow_unknown_tags=args.allow_unknown_tags,
        images_root=_root(args.images_root) if args.images_root else None,
        settings=ShardSettings(
            samples_per_shard=args.samples_per_shard, val_fraction=args.val_fraction,
            keep_untagged=args.keep_untagged,
            curation=Curation(dedupe=args.dedupe, near_distance=args.near_distance,
                              filters=Filters(
                                  min_side=args.min_side, max_aspect=args.max_aspect,
                                  exclude_tags=tuple(t.strip() for t in
                                                     args.exclude_tags.split(",") if t.strip()),
                                  ratings=args.ratings, min_score=args.min_score)),
            image=ImageSettings(size=args.image_size, resize_mode=args.resize_mode,
                                format=args.format, quality=args.quality,
                                max_pixels=args.max_pixels, animated=args.animated,
                                upscale=not args.no_upscale),
        ),
        workers=args.workers, overwrite=args.overwrite,
        node_rank=args.node_rank, num_nodes=args.num_nodes,
        **scale_options(args),
    )
    if not 0 <= job.node_rank < job.num_nodes:
        raise SettingsError(f"--node-rank must be in 0..{job.num_nodes - 1}")
    report = make_shards(job, progress=not args.quiet)
    if not args.quiet:
        print(shards_summary(report, args.out))
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and its subparsers by command name."""
    parser = argparse.ArgumentParser(
        prog="prep", description="Prepare scraped posts for training: tag index, shards. "
        "`prep COMMAND --help` shows a command's options and their defaults.",
        formatter_class=HelpFormatter,
    )
    _common_options(parser, None)
    parser.set_defaults(verbose=False, quiet=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    subparsers = {"make-tag-index": add_make_tag_index(commands),
                  "make-shards": add_make_shards(commands),
                  "merge-shards": add_merge_shards(commands)}
    _common_options(subparsers["merge-shards"], argparse.SUPPRESS)
    return parser, subparsers


def main(argv: list[str] | None = None) -> int:
    """Run the prep command line; returns the exit code (0 ok, 2 usage or input error)."""
    parser, subparsers = build_parser()
    return run_main("prep", parser, argv, lambda args: args.handler(args),
                    (PrepError, StorageError), subparsers=subparsers)
