"""`train export --format wd`: a timm run as a WD v3 tagger folder, the published shape.

    train export --model run/ --format wd [--out run/wd-v3/]
    -> config.json  model.safetensors  selected_tags.csv  model.onnx

config.json is timm's (`architecture`, `num_classes`, `model_args`, `pretrained_cfg` with the
run's input size, interpolation, mean and std), so `timm.create_model("local-dir:FOLDER",
pretrained=True)` builds the model and loads model.safetensors, a timm state dict with the
classifier in WD row order (ratings, general, characters; selected_tags.csv). As in the WD
taggers, the timm model takes BGR channels after the usual transform: a run trained on RGB
(a timm run not started from a WD folder) has its first convolution's input channels
reversed, which gives the same scores on BGR input. model.onnx is `--format wd-onnx`'s graph
(NHWC BGR 0-255, dynamic batch). `train --init-from FOLDER` reads the folder back.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from shards.atomic import write_bytes_atomic, write_json_atomic

from ..backbones.stacked import is_stacked
from ..backbones.timm_zoo import PREFIX, import_timm
from ..errors import TrainError
from ..runs import LoadedRun
from ..wd_folder import CONFIG, TAGS, WEIGHTS
from .wd_writer import check_wd, compatibility_notes, export_wd, wd_order

log = logging.getLogger(__name__)
FEATURES = "features.model."          # the timm model inside our Tagger
HEAD = "head.1."                      # our linear head's output layer


def _reference_model(timm, architecture: str, classes: int, size: int, args: dict):
    """timm's model as the folder describes it, and the model_args that build it."""
    args = {k: v for k, v in args.items() if k not in ("num_classes", "img_size")}
    try:
        return timm.create_model(architecture, num_classes=classes, img_size=size, **args), \
            {**args, "img_size": size}
    except TypeError:                               # CNNs take any size, and no img_size
        return timm.create_model(architecture, num_classes=classes, **args), args


def timm_folder_parts(run: LoadedRun) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json, timm state dict) of the run's model in WD row order, checked by loading
    the state strictly into timm's own model. Raises TrainError for a run that cannot be one."""
    model_name = str(run.config.get("model", ""))
    if run.task != "multilabel":
        raise TrainError(f"--format wd: a WD tagger is multilabel; this run is {run.task}")
    if (not model_name.startswith(PREFIX) or is_stacked(model_name)
            or run.config.get("head", "linear") != "linear"):
        raise TrainError(f"--format wd: a WD v3 folder holds a timm model with a linear head; "
                         f"this run is {model_name} with a {run.config.get('head')} head "
                         "(use --format wd-onnx)")
    timm = import_timm()
    architecture = model_name[len(PREFIX):]
    order, _ = wd_order([int(c) for c in run.categories])
    reference, args = _reference_model(timm, architecture, len(order), run.image_size,
                                       dict(run.config.get("model_args") or {}))
    cfg = reference.pretrained_cfg
    classifier = cfg.get("classifier") or "head"
    own = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    state = {k[len(FEATURES):]: v for k, v in own.items() if k.startswith(FEATURES)}
    rows = torch.tensor(order, dtype=torch.long)
    state[f"{classifier}.weight"] = own[f"{HEAD}weight"][rows]
    state[f"{classifier}.bias"] = own[f"{HEAD}bias"][rows]
    norm = run.normalization
    if norm.channel_order == "RGB":
        first = cfg.get("first_conv")
        if not first or f"{first}.weight" not in state or state[f"{first}.weight"].shape[1] != 3:
            raise TrainError(f"--format wd: cannot make {architecture} take BGR input (no "
                             "3-channel first_conv in timm's config)")
        state[f"{first}.weight"] = state[f"{first}.weight"].flip(1)
    state = {k: v.contiguous() for k, v in state.items()}
    try:
        reference.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise TrainError(f"--format wd: the run's weights do not fill timm's {architecture}: "
                         f"{str(exc).strip().splitlines()[0][:200]}") from None
    size = run.image_size
    config = {"architecture": architecture, "num_classes": len(order),
              "num_features": int(reference.num_features),
              "global_pool": getattr(reference, "global_pool", None)
              if isinstance(getattr(reference, "global_pool", None), str) else None,
              "model_args": args,
              "pretrained_cfg": {"custom_load": False, "input_size": [3, size, size],
                                 "fixed_input_size": False,
                                 "interpolation": norm.interpolation, "crop_pct": 1.0,
                                 "crop_mode": "center", "mean": list(norm.mean),
                                 "std": list(norm.std), "num_classes": len(order),
                                 "pool_size": None, "first_conv": cfg.get("first_conv"),
                                 "classifier": classifier}}
    return config, state


def export_wd_v3(run: LoadedRun, out: Path, opset: int, verbose: bool = False):
    """Write the folder; returns the ONNX graph module (for `check_wd`). Raises TrainError."""
    from safetensors.torch import save
    config, state = timm_folder_parts(run)          # refuses before anything is written
    graph = export_wd(run, out, opset=opset, verbose=verbose)     # model.onnx and selected_tags.csv
    write_bytes_atomic(out / WEIGHTS, save(state, metadata={"format": "pt"}))
    write_json_atomic(out / CONFIG, config)
    return graph


def main_wd_v3(run: LoadedRun, out: Path, *, opset: int, verbose: bool, quiet: bool) -> int:
    """The `train export --format wd` command after the run is loaded; exit code."""
    graph = export_wd_v3(run, out, opset, verbose)
    diff = check_wd(graph, out, run.image_size)
    if not quiet:
        check = ("model.onnx not checked (onnxruntime is not installed)" if diff is None
                 else f"model.onnx checked against torch: largest score difference {diff:.1e}")
        print(f"train export: wrote {out}/ ({CONFIG}, {WEIGHTS}, {TAGS}, model.onnx: a WD v3 "
              f"tagger, timm {json.loads((out / CONFIG).read_text())['architecture']}, "
              f"{run.image_size} px BGR, {len(run.names)} tags); {check}")
        for note in compatibility_notes(run):
            print(f"train export: note: {note}")
    return 0
