"""`train`: stream shards into a multi-label (or multiclass, or binary) image tagger.

    train --stream --shards shards/ --out run/ --arch resnet50 --epochs 10
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
from dataclasses import fields
from pathlib import Path

from cli_kit.command_line import (
    HelpFormatter,
    add_config_option,
    add_deprecated_alias,
    run_main,
)
from cli_kit.workers import LOADER_CAP, workers_argument
from shards.errors import ShardsError

from .errors import TrainError
from .precision import PRECISIONS
from .settings import TrainSettings, local_ranks

log = logging.getLogger(__name__)
COMMANDS = """commands:
  train export --model RUN ...   the run's model as ONNX or a WD-tagger folder (--help)
  train report --model RUN ...   the HTML evaluation report of a run (--help)
  train tag --model RUN ...      the same as `tag` (--help)"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train", description=__doc__, epilog=COMMANDS,
                                formatter_class=HelpFormatter)
    p.add_argument("--stream", action="store_true",
                   help="stream from the shards (the only mode; accepted for clarity)")
    p.add_argument("--shards", help="shards folder or base URL with manifest.json (required)")
    p.add_argument("--out", help="the run folder (required)")
    p.add_argument("--tags", help="tags.csv path or URL (default: the one beside the shards)")
    p.add_argument("--epoch-samples", type=int, help="the samples you expect when --shards "
                   "is a brace pattern of tar URLs (each shard is counted from its _stats.json "
                   "or by reading it; a different total is warned about)")
    add_config_option(p)
    g = p.add_argument_group("model")
    g.add_argument("--arch", dest="model", metavar="ARCH", help="backbone: torchvision's "
                   "(resnet50, vgg16, convnext_tiny, vit_b_16, swin_t, maxvit_t, ...) or "
                   "timm:NAME (the [timm] extra); A+B joins the pooled features of frozen "
                   "backbones (with --freeze-backbone); --list-archs lists them")
    add_deprecated_alias(g, "--model", "--arch", "model", metavar="ARCH")
    g.add_argument("--list-archs", action="store_true",
                   help="print the architectures offered and whether their ImageNet weights "
                   "are on disk, then exit")
    g.add_argument("--weights", help="imagenet (torchvision's or timm's, downloaded once), "
                   "none, a .pth or .safetensors file, or a folder in timm's local-dir layout "
                   "(config.json + model.safetensors); every backbone tensor must be filled")
    g.add_argument("--weights-partial", action="store_true",
                   help="load the tensors of --weights that fit instead of refusing a file "
                   "with missing, unexpected or other-shaped tensors")
    g.add_argument("--head", choices=["linear", "mlp"],
                   help="linear: pool, dropout, linear; mlp: an alt-i2v-style BatchNorm "
                   "+ dropout MLP")
    g.add_argument("--dropout", type=float, help="dropout before the last layer")
    g.add_argument("--head-bias", choices=["prior", "default"],
                   help="the multi-label head's starting bias: prior (each tag's log-odds in "
                   "the training split, from the shards' label_ids) or default (PyTorch's init)")
    g.add_argument("--task", choices=["multilabel", "multiclass", "binary"],
                   help="default: what the shards' manifest says, else multilabel")
    g.add_argument("--positive", help="binary task: the class that counts as present")
    g.add_argument("--init-from", metavar="RUN", help="a previous run (or checkpoint) to start "
                   "from; layers that fit are kept, a head for another label space is not. Or "
                   "a WD v3 tagger folder (config.json, model.safetensors, selected_tags.csv): "
                   "its timm model, image size and preprocessing (BGR, mean/std 0.5, white "
                   "padding, bicubic), the head regrown by tag name (see --keep-tags)")
    g.add_argument("--keep-tags", choices=["all", "seen"],
                   help="with --init-from a WD folder: all (the folder's tags and the new "
                   "data's: nothing it knows is dropped) or seen (only the new data's tags); "
                   "tags in both keep the folder's head rows, new ones start at their base rate")
    g.add_argument("--old-tags", choices=["teacher", "labels"],
                   help="the targets of the tags carried from --init-from's tagger: teacher "
                   "(default when tags are carried) = the starting model's own score on each "
                   "training picture, computed once before the first step (no augmentation) "
                   "and cached in RUN/teacher.npz; a carried tag the sample's labels "
                   "(captions) name is 1 instead, the caption overrides the teacher; added "
                   "tags always follow the labels. labels = the labels alone, a carried tag "
                   "they do not name is 0 (the naive way: the tagger forgets)")
    g.add_argument("--freeze-old-rows", action="store_true",
                   help="with --init-from a tagger: the carried tags' rows of the head's last "
                   "layer stay the source's bit for bit (no gradient, momentum or weight "
                   "decay moves them); the new rows and, without --freeze-backbone, the "
                   "backbone train")
    g.add_argument("--retention-shards", metavar="DIR",
                   help="an extension run (--init-from a tagger, tags carried) measures "
                   "forgetting here: shards of the old kind of data (every split; their "
                   "tags.csv maps onto the run's tags by name); the carried tags' mAP of the "
                   "starting model and of the result go into eval.json `retention` (default: "
                   "the run's validation split)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--loss", choices=["bce", "focal", "asymmetric"],
                   help="multilabel loss (multiclass uses cross-entropy)")
    g.add_argument("--optimizer", choices=["adamw", "sgd"], help="the optimizer")
    g.add_argument("--lr", type=float, help="peak learning rate (after the warmup, then cosine)")
    g.add_argument("--lr-backbone", type=float, help="peak learning rate of the backbone "
                   "(default: --lr); warm-up and schedule apply to it as to the head's")
    g.add_argument("--layer-decay", type=float, metavar="D",
                   help="layer-wise decay for timm backbones (ViT, Swin, EVA02, ConvNeXt): a "
                   "layer N below the last trains at D**N of the backbone's learning rate "
                   "(e.g. 0.75; default: off)")
    g.add_argument("--weight-decay", type=float, help="decoupled weight decay")
    g.add_argument("--momentum", type=float, help="SGD momentum")
    g.add_argument("--epochs", type=int, help="passes over the training split")
    g.add_argument("--batch-size", type=int, help="images per step on each device")
    g.add_argument("--grad-accum", type=int, help="steps whose gradients add up before an "
                   "optimizer step")
    g.add_argument("--warmup-steps", type=int, help="linear warmup in optimizer steps "
                   "(default: 5%% of them)")
    g.add_argument("--head-warmup-steps", type=int, help="train only the head for this many "
                   "steps first")
    g.add_argument("--ema", type=float, help="decay of an EMA of the weights (0: off)")
    g.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (the "
                   "schedule still spans all epochs; default: no limit)")
    g.add_argument("--freeze-backbone", action="store_true",
                   help="train the head only (a linear probe on frozen features)")
    g = p.add_argument_group("data")
    g.add_argument("--image-size", type=int, help="side of the square training crop, pixels")
    g.add_argument("--workers", **workers_argument("data loading processes per rank",
                                                   LOADER_CAP, local_ranks()))
    g.add_argument("--shuffle-buffer", type=int, help="samples held for shuffling the stream")
    g.add_argument("--open-shards", type=int, help="shards each worker reads interleaved")
    g.add_argument("--seed", type=int, help="seed of the shuffles, augmentation and init")
    g.add_argument("--crop-scale", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="area range of the random training crop (keeps borders and objects "
                   "in the picture)")
    g.add_argument("--trivial-augment", action="store_true",
                   help="TrivialAugment (without colour operations) on training images")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--precision", choices=PRECISIONS,
                   help="auto: bf16 on a GPU that supports it, else fp16 with a GradScaler; "
                   "fp32 on CPU")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep the NCHW memory layout (default: channels-last on a GPU)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--device-decode", action="store_true",
                   help="decode JPEGs and augment on the training device (nvJPEG on a GPU) "
                   "instead of on the CPU workers")
    g = p.add_argument_group("evaluation and checkpoints")
    g.add_argument("--threshold", type=float, help="score over which a tag counts as present "
                   "in the evaluation (F1, precision, recall)")
    g.add_argument("--min-support", type=int, help="positives a tag needs for its own best-F1 "
                   "threshold")
    g.add_argument("--eval-every", type=int, help="optimizer steps between evaluations "
                   "(0: once per epoch)")
    g.add_argument("--checkpoint-every", type=int, help="optimizer steps between checkpoints")
    g.add_argument("--log-every", type=int, help="optimizer steps between progress lines")
    g.add_argument("--log", choices=["none", "tensorboard"],
                   help="also write TensorBoard events to RUN/tensorboard")
    g.add_argument("--resume", action="store_true",
                   help="continue from run/checkpoints/last.pt; every node must see the same "
                   "--out (a shared filesystem)")
    g.add_argument("--overwrite", action="store_true",
                   help="delete the run already in --out and start again (default: a folder "
                   "with files is refused unless --resume or --overwrite)")
    g.add_argument("--keep", choices=["best", "last"],
                   help="which model becomes model.safetensors: the best evaluated or the "
                   "last; eval.json says which")
    g.add_argument("--no-report", action="store_true",
                   help="skip the HTML evaluation report (default: write run/report/)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="train on an unfinished shard build (default: refuse it)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    defaults = TrainSettings(shards="", out="")      # now: --workers' default is this machine's
    p.set_defaults(**{k: v for k, v in defaults.to_dict().items()
                      if k not in ("shards", "out", "extra")})
    return p


def settings_from(args: argparse.Namespace) -> TrainSettings:
    """The run's settings from the parsed flags (defaults < --config file < flags)."""
    names = {f.name for f in fields(TrainSettings)} - {"extra"}
    values = {k: v for k, v in vars(args).items() if k in names}
    for required in ("shards", "out"):
        if not values.get(required):
            raise TrainError(f"--{required} is required")
    values["crop_scale"] = tuple(values["crop_scale"])
    settings = TrainSettings(**values)
    for name in ("epochs", "batch_size", "grad_accum", "image_size"):
        if getattr(settings, name) < 1:
            raise TrainError(f"--{name.replace('_', '-')} must be at least 1")
    if settings.workers < 0:
        raise TrainError("--workers must be 0 or more")
    return settings


def run_training(args: argparse.Namespace) -> int:
    """Train as the flags say, then write the report; the exit code."""
    if args.list_archs:
        from .archs import print_archs
        print_archs()
        return 0
    settings = settings_from(args)
    if int(os.environ.get("RANK", "0")) == 0:         # rank 0 alone checks and clears --out
        from .run_folder import claim_run_folder
        claim_run_folder(Path(settings.out), settings.resume, args.overwrite)
    from .run import Run
    report = Run(settings).fit()
    if not args.no_report and report.get("mAP") is not None:
        _write_report(settings, args.quiet)
    if not args.quiet and report:
        print(f"train: done at step {report['step']}; mAP {report.get('mAP', float('nan')):.4f}"
              f"; outputs in {settings.out}")
        if isinstance(report.get("retention"), dict):
            from .retention import summary_line
            print(f"train: {summary_line(report['retention'])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `train` (or its subcommands tag, report, export); the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["tag"]:
        from .tag.cli import main as tag_main
        return tag_main(argv[1:])
    if argv[:1] == ["report"]:
        from .report.cli import main as report_main
        return report_main(argv[1:])
    if argv[:1] == ["export"]:
        from .export.cli import main as export_main
        return export_main(argv[1:])
    return run_main("train", build_parser(), argv, run_training, (TrainError, ShardsError),
                    interrupted="interrupted; `--resume` continues from the last checkpoint",
                    disk_full="free some space and add --resume to continue from the last "
                    "checkpoint")


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
