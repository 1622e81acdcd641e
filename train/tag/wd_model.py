"""`tag --model` on a WD-tagger folder (model.onnx + selected_tags.csv), through onnxruntime.

    tag --model wd-swinv2-tagger-v3/ pics/ --threshold 0.35 --character-threshold 0.85
    tag --model run/wd-tagger/ pics/ --mcut --output tags.parquet

So a run can be compared with a published tagger on the same images, with the same output
options. Pictures are prepared as for a run (orientation, alpha onto white, padded with white
to a square at the model's side, which comes from the input shape), then given to the model as
it expects them: float32 NHWC, BGR, 0-255. The first output is taken as the probabilities, one
per row of selected_tags.csv; a second 2-D output, where there is one, serves `--embed`. The
default threshold is 0.35, the WD taggers' usual general threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from cli_kit.workers import LOADER_CAP, resolve_workers
from shards.tags import read_tags

from ..errors import TrainError
from ..runs import load_run
from .inference import Batch, ImageFiles, collate, predict

log = logging.getLogger(__name__)
WD_MODEL, WD_TAGS = "model.onnx", "selected_tags.csv"
WD_THRESHOLD = 0.35


def is_wd_folder(path: Path) -> bool:
    """A folder with model.onnx and selected_tags.csv and no run config: a WD tagger."""
    return (path / WD_MODEL).is_file() and (path / WD_TAGS).is_file() \
        and not (path / "config.json").is_file()


@dataclass(kw_only=True)
class WdModel:
    """A WD tagger ready to predict; it answers the questions `tag` asks of a LoadedRun."""

    path: Path
    session: object                   # onnxruntime.InferenceSession
    tags: list[dict]
    image_size: int
    resize: str
    device: torch.device
    input_name: str
    output_name: str
    embedding_name: str | None
    precision: str = "fp32"
    task: str = "multilabel"
    positive: str | None = None
    config: dict = field(default_factory=lambda: {"model": "wd-onnx",
                                                  "threshold": WD_THRESHOLD})

    @property
    def names(self) -> list[str]:
        return [t["name"] for t in self.tags]

    @property
    def categories(self) -> np.ndarray:
        return np.array([t["category"] for t in self.tags])

    def check_embed(self) -> None:
        """Raise TrainError when the model has no embedding output for `--embed`."""
        if self.embedding_name is None:
            raise TrainError(f"--embed: {self.path / WD_MODEL} has no embedding output (a "
                             "second 2-D output; `train export --format wd-onnx` writes one)")

    def predict(self, paths: Sequence[Path], *, batch_size: int = 32, workers: int | None = None,
                embed: bool = False) -> Iterator[Batch]:
        """Batches of predictions for `paths`, in order, as `inference.predict` gives them."""
        workers = resolve_workers(workers, LOADER_CAP)
        if embed:
            self.check_embed()
        loader = DataLoader(ImageFiles(paths, self.image_size, self.resize),
                            batch_size=batch_size, num_workers=workers, collate_fn=collate,
                            prefetch_factor=4 if workers else None)
        wanted = [self.output_name] + ([self.embedding_name] if embed else [])
        for images, indices, failed in loader:
            if images is None:
                yield Batch([], np.zeros((0, len(self.tags)), np.float32), None, failed)
                continue
            bgr = images.permute(0, 2, 3, 1).flip(-1).numpy().astype(np.float32)
            outputs = self.session.run(wanted, {self.input_name: bgr})
            yield Batch(indices, outputs[0], outputs[1] if embed else None, failed)


def load_wd(path: str | Path, *, device: str = "auto", resize: str = "auto") -> WdModel:
    """Open a WD-tagger folder. Raises TrainError when onnxruntime is missing, the folder is
    incomplete, or the model's input or output does not fit the WD contract."""
    path = Path(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise TrainError("a WD-tagger folder needs onnxruntime: pip install onnxruntime") \
            from None
    providers = ort.get_available_providers()
    if device.startswith("cuda") and "CUDAExecutionProvider" not in providers:
        raise TrainError(f"--device {device}: onnxruntime has no CUDA provider here "
                         "(pip install onnxruntime-gpu)")
    use_cuda = device != "cpu" and "CUDAExecutionProvider" in providers
    chosen = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda \
        else ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(path / WD_MODEL), providers=chosen)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own kinds
        raise TrainError(f"{path / WD_MODEL}: onnxruntime cannot load it: "
                         f"{str(exc).strip().splitlines()[0][:200]}") from None
    tags = read_tags(path / WD_TAGS)
    inp = session.get_inputs()[0]
    shape = inp.shape
    if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int) or shape[1] != shape[2]:
        raise TrainError(f"{path / WD_MODEL}: input {inp.name} is {shape}, not a WD tagger's "
                         "(batch, side, side, 3)")
    outputs = session.get_outputs()
    width = outputs[0].shape[-1]
    if isinstance(width, int) and width != len(tags):
        raise TrainError(f"{path}: the model has {width} outputs, {WD_TAGS} {len(tags)} rows")
    extra = outputs[1].name if len(outputs) > 1 and len(outputs[1].shape) == 2 else None
    return WdModel(path=path, session=session, tags=tags, image_size=int(shape[1]),
                   resize="pad" if resize == "auto" else resize,
                   device=torch.device("cuda" if use_cuda else "cpu"), input_name=inp.name,
                   output_name=outputs[0].name, embedding_name=extra)


def load_model(path: str | Path, *, device: str = "auto", precision: str = "auto",
               resize: str = "auto"):
    """A train run (`train.runs.load_run`) or a WD-tagger folder (`load_wd`), by its files."""
    if is_wd_folder(Path(path)):
        return load_wd(path, device=device, resize=resize)
    return load_run(path, device=device, precision=precision, resize=resize)


def predict_any(run, paths: Sequence[Path], *, batch_size: int = 32, workers: int | None = None,
                embed: bool = False) -> Iterator[Batch]:
    """`inference.predict` for a run, `WdModel.predict` for a WD tagger."""
    if isinstance(run, WdModel):
        return run.predict(paths, batch_size=batch_size, workers=workers, embed=embed)
    return predict(run, paths, batch_size=batch_size, workers=workers, embed=embed)
