"""WD v3 tagger folders of the published shape for tests (issue 24), and the reference: timm's
own `local-dir:` loading fed with the WD preprocessing, built here with PIL.

A folder is a small random-weight timm model saved by timm's `save_for_hf`, its config.json
rewritten as SmilingWolf's releases have it (`model_args`, `pretrained_cfg` with mean and std
0.5, bicubic, `classifier` null) and a selected_tags.csv with the ratings first.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from support.train_fixtures import VISUAL
from train.run import Run
from train.settings import TrainSettings

SIDE = 64
RATINGS = ["general", "sensitive", "questionable", "explicit"]
OLD_GENERAL = VISUAL[:8] + ["old_only_tag"]
OLD_CHARACTER = ["old_character_(series)"]
ADDED = VISUAL[8:]                 # in the new data only
FOLDERS = {
    "vit": ("vit_tiny_patch16_224", {"img_size": SIDE, "class_token": False,
                                     "global_pool": "avg", "fc_norm": False,
                                     "act_layer": "gelu_tanh"}),
    "convnext": ("convnext_atto", {}),
}


def write_wd_folder(folder: Path, architecture: str, model_args: dict, seed: int = 0) -> Path:
    """A WD v3 tagger folder of a random-weight timm model, in the published shape."""
    import timm
    from timm.models._hub import save_for_hf
    names = RATINGS + OLD_GENERAL + OLD_CHARACTER
    torch.manual_seed(seed)
    model = timm.create_model(architecture, num_classes=len(names), **model_args).eval()
    with torch.no_grad():                 # a visible spread of scores, not all near 0.5
        head = model.get_classifier()
        head.weight.mul_(20)
        head.bias.normal_(0, 2)
    save_for_hf(model, str(folder), model_args=model_args, safe_serialization=True)
    config = json.loads((folder / "config.json").read_text())
    config["model_args"] = model_args
    config["pretrained_cfg"] = {
        "custom_load": False, "input_size": [3, SIDE, SIDE], "fixed_input_size": False,
        "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "num_classes": len(names),
        "pool_size": None, "first_conv": None, "classifier": None}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    with (folder / "selected_tags.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["tag_id", "name", "category", "count"])
        cats = [9] * len(RATINGS) + [0] * len(OLD_GENERAL) + [4] * len(OLD_CHARACTER)
        for i, (name, cat) in enumerate(zip(names, cats, strict=True)):
            w.writerow([1000 + i, name, cat, 5000 - i])
    return folder


def reference_scores(folder: Path, paths: list[Path]) -> np.ndarray:
    """timm's own loading of the folder, on the folder's preprocessing built with PIL: pad
    with white to a square, bicubic resize to the input size, to [0, 1], normalise with the
    folder's mean and std (RGB), RGB -> BGR."""
    import timm
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    cfg = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    side_out = cfg["input_size"][-1]
    mean = torch.tensor(cfg["mean"]).view(3, 1, 1)
    std = torch.tensor(cfg["std"]).view(3, 1, 1)
    batch = []
    for path in paths:
        im = Image.open(path).convert("RGB")
        side = max(im.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
        square = square.resize((side_out, side_out), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(square, dtype=np.float32) / 255).permute(2, 0, 1)
        x = (x - mean) / std
        batch.append(x[[2, 1, 0]])                                  # RGB -> BGR
    with torch.no_grad():
        return torch.sigmoid(model(torch.stack(batch))).numpy()


def train_from(folder: Path, shards: Path, out: Path, keep_tags: str = "all") -> Path:
    """One training step at lr 0 from `folder` (AdamW then moves no weight): a finished run
    whose model is the one `--init-from` built."""
    torch.set_num_threads(1)
    Run(TrainSettings(shards=str(shards), out=str(out), init_from=str(folder),
                      keep_tags=keep_tags, epochs=1, batch_size=16, workers=0, log_every=0,
                      checkpoint_every=0, max_steps=1, lr=0.0, weight_decay=0.0,
                      keep="last", device="cpu")).fit()
    return out


def write_pictures(root: Path) -> list[Path]:
    """PNGs whose long side is the model's, so no tool resizes them (prep resizes with Lanczos,
    the WD preprocessing bicubically): wide and tall ones padded with white, a square."""
    rng = np.random.default_rng(3)
    paths = []
    for i, (w, h) in enumerate([(SIDE, 40), (36, SIDE), (SIDE, SIDE), (SIDE, 50)]):
        path = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths
