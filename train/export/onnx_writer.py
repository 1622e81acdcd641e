"""`train export --format onnx`: a run's model as ONNX, with a dynamic batch axis.

The graph takes `images`, float32 (batch, 3, S, S) at the run's image size S, RGB scaled to
[0, 1] and normalised with the run's mean and std (config.json's `normalization`, as `tag`
prepares them: ImageNet's unless the weights came with their own), and gives
`scores` (batch, outputs): probabilities, sigmoid per tag (softmax for a multiclass run), in
the order of run/tags.csv; and `embedding` (batch, width): the pooled features. The model's
metadata repeats the task, image size, normalisation and label names. Uses torch's
torch.export-based exporter (needs `onnx` and `onnxscript`); when onnxruntime is installed,
the file is checked against torch on a batch of another size than the one it was traced with.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import torch
from torch import nn

from shards.atomic import publish, temporary_name

from ..errors import TrainError
from ..runs import LoadedRun, probabilities

log = logging.getLogger(__name__)
MIN_OPSET = 18
TRACE_BATCH = 2


class Exported(nn.Module):
    """images -> (scores, embedding): the graph that goes into the ONNX file."""

    def __init__(self, run: LoadedRun):
        super().__init__()
        self.model, self.task = run.model, run.task

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.embed(images)
        return probabilities(self.model.head(features), self.task), features


def export_onnx(run: LoadedRun, out: Path, *, opset: int = MIN_OPSET,
                verbose: bool = False) -> Path:
    """Write `run`'s model to `out` as ONNX (atomically). Raises TrainError."""
    norm = run.normalization
    meta = {"task": run.task, "image_size": str(run.image_size),
            "mean": json.dumps(list(norm.mean)), "std": json.dumps(list(norm.std)),
            "interpolation": norm.interpolation, "input": "RGB, [0, 1], normalised, NCHW",
            "resize": run.resize, "background": "white", "labels": json.dumps(run.names),
            "positive": run.positive or "", "model": str(run.config.get("model"))}
    example = torch.rand(TRACE_BATCH, 3, run.image_size, run.image_size)
    write_onnx(Exported(run).eval().cpu(), example, out, inputs=["images"],
               outputs=["scores", "embedding"], opset=opset, meta=meta, verbose=verbose)
    return out


def write_onnx(module: nn.Module, example: torch.Tensor, path: Path, *, inputs: list[str],
               outputs: list[str], opset: int, meta: dict[str, str],
               verbose: bool = False) -> None:
    """Export `module` (whose forward takes `images`) traced on `example`, with a dynamic batch
    axis, to `path` atomically, with `meta` in the file's metadata. Raises TrainError with one
    line (missing packages, an opset the exporter cannot write, any exporter failure)."""
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch's exporter needs it; fail here, clearly
    except ImportError as exc:
        raise TrainError(f"ONNX export needs the onnx and onnxscript packages ({exc.name} is "
                         "missing): pip install 'booru-tagger[onnx]'") from None
    if opset < MIN_OPSET:
        raise TrainError(f"--opset {opset}: torch's exporter writes opset {MIN_OPSET} or newer")
    tmp = temporary_name(path)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    try:
        with quiet:
            torch.onnx.export(module, (example,), str(tmp), dynamo=True, verbose=verbose,
                              input_names=inputs, output_names=outputs,
                              dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
                              opset_version=opset, external_data=False)
        proto = onnx.load(str(tmp))
        got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        if got != opset:
            raise TrainError(f"--opset {opset}: the exporter could only write opset {got}")
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        publish(tmp, path)
    except TrainError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds; one line each
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise TrainError(f"ONNX export failed: {type(exc).__name__}: {text}") from None
    finally:
        tmp.unlink(missing_ok=True)


def check_onnx(run: LoadedRun, path: Path, batch: int = TRACE_BATCH + 3) -> float | None:
    """Largest absolute difference of the ONNX scores from torch's on a random batch of
    `batch` images (another size than the traced one); None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(batch, 3, run.image_size, run.image_size, generator=torch.Generator()
                   .manual_seed(0))
    with torch.inference_mode():
        want = Exported(run).eval().cpu()(x)[0].numpy()
    got = session.run(["scores"], {"images": x.numpy()})[0]
    return float(abs(got - want).max())
