"""`train export --format wd-onnx`: a run as a WD-tagger folder, for the tools that load those.

    train export --model run/ --format wd-onnx [--out run/wd-tagger/]
    -> run/wd-tagger/model.onnx  run/wd-tagger/selected_tags.csv

The contract of SmilingWolf's WD taggers, as their consumers read it (kohya-ss sd-scripts
`finetune/tag_images_by_wd14_tagger.py`, the wd-tagger space's app.py, dghs-imgutils
`imgutils/tagging/wd14.py`): one float32 input (batch, S, S, 3), NHWC, BGR, 0-255 with no
mean/std normalisation, the picture padded with white to a square; S is read from the input
shape; the first output holds sigmoid probabilities, one per row of `selected_tags.csv`
(`tag_id,name,category,count`; category 9 rating, 0 general, 4 character).

The graph wraps the layout, the colour order and the normalisation around the run's model, so
on the same S-px picture it gives the scores `tag` gives. Rows are ordered rating, general,
character, as kohya's script assumes (it takes the first four outputs as the ratings, then the
general tags, then the characters); tags of other categories (artist, copyright, meta) are
written as general, the only other category those tools read.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shards.tags import write_tags

from ..errors import TrainError
from ..runs import CHARACTER, GENERAL, RATING, LoadedRun
from .onnx_writer import MIN_OPSET, TRACE_BATCH, write_onnx

log = logging.getLogger(__name__)
WD_MODEL, WD_TAGS = "model.onnx", "selected_tags.csv"
INPUT, OUTPUT = "input", "output"
KOHYA_SIZE = 448                  # kohya's script always feeds 448 px pictures



def wd_order(categories: list[int]) -> tuple[list[int], list[int]]:
    """(output order, WD category of each output in that order): ratings, then general
    (every category other than rating and character), then characters, each in run order."""
    def group(c: int) -> int:
        return 0 if c == RATING else 2 if c == CHARACTER else 1
    order = sorted(range(len(categories)), key=lambda i: (group(categories[i]), i))
    wd = [c if c in (RATING, CHARACTER) else GENERAL for c in (categories[i] for i in order)]
    return order, wd


class WdGraph(nn.Module):
    """(n, S, S, 3) BGR 0-255 float32 -> (n, outputs) sigmoid scores in WD row order."""

    def __init__(self, run: LoadedRun, order: list[int]):
        super().__init__()
        self.model = run.model
        self.register_buffer("order", torch.tensor(order, dtype=torch.long))
        norm = run.normalization
        self.register_buffer("mean", torch.tensor(norm.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(norm.std).view(1, 3, 1, 1) * 255)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images[..., [2, 1, 0]].permute(0, 3, 1, 2)          # BGR NHWC -> RGB NCHW
        x = (x - self.mean) / self.std
        return torch.sigmoid(self.model.head(self.model.embed(x)))[:, self.order]


def compatibility_notes(run: LoadedRun) -> list[str]:
    """What a WD tool will do differently with this run's folder, one line each."""
    cats = list(run.categories)
    notes = []
    if cats.count(RATING) != 4:
        notes.append(f"the run has {cats.count(RATING)} rating outputs, not 4: kohya's script "
                     "takes the first four outputs as ratings (build the tag index with "
                     "`prep make-tag-index --include-ratings`)")
    folded = sum(c not in (RATING, GENERAL, CHARACTER) for c in cats)
    if folded:
        notes.append(f"{folded} artist/copyright/meta tags are written as general (category 0)")
    if run.image_size != KOHYA_SIZE:
        notes.append(f"the input is {run.image_size} px: tools that read the size from the "
                     f"model adapt; kohya's script always feeds {KOHYA_SIZE} px (train at "
                     f"--image-size {KOHYA_SIZE} for it)")
    return notes


def write_selected_tags(path: Path, run: LoadedRun, order: list[int], wd: list[int]) -> None:
    """selected_tags.csv: the run's tag rows in WD order, with their WD categories."""
    write_tags(path, [(run.tags[i]["tag_id"], run.tags[i]["name"], cat, run.tags[i]["count"])
                      for i, cat in zip(order, wd, strict=True)])


def export_wd(run: LoadedRun, out: Path, *, opset: int = MIN_OPSET,
              verbose: bool = False) -> WdGraph:
    """Write out/model.onnx and out/selected_tags.csv (each atomically); returns the graph
    module that was exported. Raises TrainError (wrong task, missing packages, exporter)."""
    if run.task != "multilabel":
        raise TrainError(f"--format wd-onnx: WD tools threshold independent sigmoid scores; "
                         f"this run is {run.task} (use --format onnx)")
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out}: a file is there; wd-onnx writes a folder")
    out.mkdir(exist_ok=True)
    order, wd = wd_order([int(c) for c in run.categories])
    graph = WdGraph(run, order).eval().cpu()
    size = run.image_size
    meta = {"format": "wd-onnx", "image_size": str(size), "model": str(run.config.get("model")),
            "input": "BGR, 0-255, NHWC, padded with white to a square",
            "labels": json.dumps([run.names[i] for i in order])}
    write_onnx(graph, torch.rand(TRACE_BATCH, size, size, 3) * 255, out / WD_MODEL,
               inputs=[INPUT], outputs=[OUTPUT], opset=opset, meta=meta, verbose=verbose)
    write_selected_tags(out / WD_TAGS, run, order, wd)
    return graph


def check_wd(graph: WdGraph, folder: Path, size: int, batch: int = TRACE_BATCH + 3) -> float | None:
    """Largest absolute difference of the ONNX scores from torch's on `batch` random
    pictures (another batch size than the traced one); None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(folder / WD_MODEL), providers=["CPUExecutionProvider"])
    x = torch.rand(batch, size, size, 3, generator=torch.Generator().manual_seed(0)) * 255
    with torch.inference_mode():
        want = graph(x).numpy()
    got = session.run([OUTPUT], {INPUT: x.numpy()})[0]
    return float(np.abs(got - want).max())


def main_wd(run: LoadedRun, out: Path, *, opset: int, verbose: bool, quiet: bool) -> int:
    """The `train export --format wd-onnx` command after the run is loaded; exit code."""
    graph = export_wd(run, out, opset=opset, verbose=verbose)  # TrainError: exit 2 in main
    diff = check_wd(graph, out, run.image_size)
    if not quiet:
        check = ("not checked (onnxruntime is not installed)" if diff is None
                 else f"checked against torch: largest score difference {diff:.1e}")
        print(f"train export: wrote {out}/{WD_MODEL} and {WD_TAGS} (WD-tagger format, "
              f"{run.image_size} px BGR NHWC, {len(run.names)} tags); {check}")
        for note in compatibility_notes(run):
            print(f"train export: note: {note}")
    return 0
