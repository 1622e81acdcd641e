"""`train export`: the command line; the writers are onnx_writer.py and wd_writer.py.

    train export --model run/ --format onnx [--out run/model.onnx] [--opset 18]
    train export --model run/ --format wd-onnx [--out run/wd-tagger/]

--format onnx writes one ONNX file: `images`, float32 (batch, 3, S, S) at the run's image size
S, RGB scaled to [0, 1] and normalised with the run's mean and std (as `tag` prepares them), to
`scores` (probabilities in run/tags.csv order) and `embedding` (the pooled features).
--format wd-onnx writes a WD-tagger folder (model.onnx + selected_tags.csv) for the tools that
load those. When onnxruntime is installed, the file is checked against torch.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cli_kit.command_line import HelpFormatter, add_deprecated_alias, run_main

from ..errors import TrainError
from ..runs import load_run
from .onnx_writer import MIN_OPSET, check_onnx, export_onnx
from .wd_writer import main_wd

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train export", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--model", type=Path, metavar="RUN",
                   help="a finished train run folder (required)")
    add_deprecated_alias(p, "--run", "--model", "model", type=Path, metavar="RUN")
    p.add_argument("--format", choices=["onnx", "wd-onnx"], default="onnx",
                   help="onnx, or wd-onnx: a WD-tagger folder (model.onnx + selected_tags.csv) "
                   "for the tools that load those")
    p.add_argument("--out", type=Path,
                   help="default: RUN/model.onnx; for wd-onnx a folder, RUN/wd-tagger")
    p.add_argument("--opset", type=int, default=MIN_OPSET, help="ONNX opset version")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages, with the "
                   "exporter's")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    return p


def run_export(args: argparse.Namespace) -> int:
    """Export the run the flags name; the exit code."""
    if args.model is None:
        raise TrainError("--model RUN is required")
    if not args.verbose:                    # the exporter's passes log every step at INFO
        for name in ("onnxscript", "onnx_ir", "torch.onnx", "torch.export"):
            logging.getLogger(name).setLevel(logging.WARNING)
    out = args.out or args.model / ("wd-tagger" if args.format == "wd-onnx" else "model.onnx")
    run = load_run(args.model, device="cpu", precision="fp32", resize="auto")
    if args.format == "wd-onnx" and out.parent.is_dir():
        return main_wd(run, out, opset=args.opset, verbose=args.verbose, quiet=args.quiet)
    if not out.parent.is_dir():
        raise TrainError(f"--out {out}: the folder {out.parent} does not exist")
    export_onnx(run, out, opset=args.opset, verbose=args.verbose)
    diff = check_onnx(run, out)
    if not args.quiet:
        check = ("not checked (onnxruntime is not installed)" if diff is None
                 else f"checked against torch: largest score difference {diff:.1e}")
        print(f"train export: wrote {out} ({out.stat().st_size / 1e6:.1f} MB, opset "
              f"{args.opset}, dynamic batch, {run.image_size} px, {len(run.names)} outputs); "
              f"{check}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `train export`; the exit code (0 ok, 2 usage or export error)."""
    return run_main("train export", build_parser(), argv, run_export, (TrainError,))
