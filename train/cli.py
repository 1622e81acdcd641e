"""`train`: stream shards into a multi-label (or multiclass, or binary) image tagger.

    train --stream --shards shards/ --out run/ --model resnet50 --epochs 10
    train --stream --shards shards/ --out run/ --resume            # after an interruption
    train --stream --shards folder-shards/ --out mona/ --task binary --positive mona \\
          --init-from run/ --freeze-backbone

Writes run/config.json, run/tags.csv, run/checkpoints/last.pt, run/metrics.csv and .png,
run/eval.json and run/model.safetensors. `python -m train tag ...` runs the `tag` command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

from scrape.logs import configure_logging
from shards.errors import ShardsError

from .errors import TrainError
from .settings import TrainSettings

log = logging.getLogger(__name__)
_DEFAULTS = TrainSettings(shards="", out="")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stream", action="store_true",
                   help="stream from the shards (the only mode; accepted for clarity)")
    p.add_argument("--shards", help="shards folder or base URL with manifest.json (required)")
    p.add_argument("--out", help="the run folder (required)")
    p.add_argument("--tags", help="tags.csv path or URL (default: the one beside the shards)")
    p.add_argument("--epoch-samples", type=int, help="samples per epoch when --shards is a "
                   "brace pattern of tar URLs without a manifest")
    p.add_argument("--config", type=Path, metavar="FILE.toml",
                   help="settings from a TOML file (flags win)")
    g = p.add_argument_group("model")
    g.add_argument("--model", help=f"torchvision backbone ({_DEFAULTS.model}; resnet18/34/50/"
                   "101, vgg16, vgg16_bn, ...)")
    g.add_argument("--weights", help="imagenet (default; downloaded once by torchvision), "
                   "none, or a path to backbone weights")
    g.add_argument("--head", choices=["linear", "mlp"])
    g.add_argument("--dropout", type=float)
    g.add_argument("--head-bias", choices=["prior", "default"],
                   help="multi-label head's starting bias: prior (default; each tag's "
                   "log-odds from the tags.csv counts over the shards' samples) or default "
                   "(PyTorch's init)")
    g.add_argument("--task", choices=["multilabel", "multiclass", "binary"],
                   help="default: what the shards' manifest says, else multilabel")
    g.add_argument("--positive", help="binary task: the class that counts as present")
    g.add_argument("--init-from", help="a previous run (or checkpoint) to start from; layers "
                   "that fit are kept, a head for another label space is not")
    g = p.add_argument_group("optimisation")
    g.add_argument("--loss", choices=["bce", "focal", "asymmetric"])
    g.add_argument("--optimizer", choices=["adamw", "sgd"])
    for name, kind in (("lr", float), ("weight-decay", float), ("momentum", float),
                       ("epochs", int), ("batch-size", int), ("grad-accum", int),
                       ("warmup-steps", int), ("head-warmup-steps", int), ("ema", float),
                       ("max-steps", int)):
        g.add_argument(f"--{name}", type=kind)
    g.add_argument("--freeze-backbone", action="store_true", default=None,
                   help="train the head only (a linear probe on frozen features)")
    g = p.add_argument_group("data")
    for name, kind in (("image-size", int), ("workers", int), ("shuffle-buffer", int),
                       ("open-shards", int), ("seed", int)):
        g.add_argument(f"--{name}", type=kind)
    g.add_argument("--crop-scale", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="area range of the random training crop (default: 0.85 1.0, which "
                   "keeps borders and objects in the picture)")
    g.add_argument("--trivial-augment", action="store_true", default=None)
    g = p.add_argument_group("hardware")
    g.add_argument("--device")
    g.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"],
                   help="auto (default): bf16 on a GPU that supports it, else fp16 with a "
                   "GradScaler; fp32 on CPU")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   default=None)
    g.add_argument("--compile", action="store_true", default=None)
    g.add_argument("--device-decode", action="store_true", default=None,
                   help="decode JPEGs and augment on the training device (nvJPEG on a GPU) "
                   "instead of on the CPU workers")
    g = p.add_argument_group("evaluation and checkpoints")
    for name, kind in (("threshold", float), ("min-support", int), ("eval-every", int),
                       ("checkpoint-every", int), ("log-every", int)):
        g.add_argument(f"--{name}", type=kind)
    g.add_argument("--log", choices=["none", "tensorboard"],
                   help="also write TensorBoard events to RUN/tensorboard (default: none)")
    g.add_argument("--resume", action="store_true", default=None,
                   help="continue from run/checkpoints/last.pt (default: off); every node "
                   "must see the same --out (a shared filesystem)")
    g.add_argument("--keep", choices=["best", "last"],
                   help="which model becomes model.safetensors: the best evaluated (default) "
                   "or the last; eval.json says which")
    g.add_argument("--no-report", action="store_true",
                   help="skip the HTML evaluation report (default: write run/report/)")
    p.add_argument("--allow-incomplete", action="store_true", default=None,
                   help="train on an unfinished shard build (default: refuse it)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def settings_from(args: argparse.Namespace) -> TrainSettings:
    """Defaults, then the TOML file, then the flags given on the command line."""
    names = {f.name for f in fields(TrainSettings)} - {"extra"}
    values: dict = {}
    if args.config:
        try:
            config = tomllib.loads(args.config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise TrainError(f"cannot read --config {args.config}: {exc}") from None
        for key, value in config.items():
            key = key.replace("-", "_")
            if key not in names:
                raise TrainError(f"unknown setting in {args.config}: {key}")
            values[key] = value
    values.update({k: v for k, v in vars(args).items() if k in names and v is not None})
    for required in ("shards", "out"):
        if not values.get(required):
            raise TrainError(f"--{required} is required")
    settings = TrainSettings(**values)
    for name in ("epochs", "batch_size", "grad_accum", "image_size"):
        if getattr(settings, name) < 1:
            raise TrainError(f"--{name.replace('_', '-')} must be at least 1")
    return settings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["tag"]:
        from .tag.cli import main as tag_main
        return tag_main(argv[1:])
    if argv[:1] == ["report"]:
        from .report.cli import main as report_main
        return report_main(argv[1:])
    if argv[:1] == ["export"]:
        from .export import main as export_main
        return export_main(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    configure_logging(args.verbose, args.quiet)
    try:
        settings = settings_from(args)
        from .run import Run
        report = Run(settings).fit()
    except (TrainError, ShardsError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("train: interrupted; `--resume` continues from the last checkpoint",
              file=sys.stderr)
        return 130
    if not args.no_report and report.get("mAP") is not None:
        _write_report(settings, args.quiet)
    if not args.quiet and report:
        print(f"train: done at step {report['step']}; mAP {report.get('mAP', float('nan')):.4f}"
              f"; outputs in {settings.out}")
    return 0


def _write_report(settings: TrainSettings, quiet: bool) -> None:
    """run/report/ after a run with a validation split (rank 0 only); a failure only warns."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    from .report.cli import write_report
    try:
        index = write_report(settings.out, device=settings.device, quiet=quiet)
    except TrainError as exc:
        log.warning("no evaluation report: %s", exc)
        return
    if not quiet:
        print(f"train: report in {index}")
