"""`train --init-from WD-FOLDER`: a WD v3 tagger folder in, its model and preprocessing kept,
its head grown and shrunk by tag name (issue 24, parts 1 and 2).

The folders are written here in exactly the published shape (timm's config.json with
`architecture`, `num_classes`, `model_args`, `pretrained_cfg` as in SmilingWolf's releases,
`classifier` null; model.safetensors; selected_tags.csv with the ratings first) from small
random-weight timm models. The reference is timm's own loader, `create_model("local-dir:...")`,
fed with the folder's preprocessing built here with PIL: pad with white to a square, bicubic
resize, to [0, 1], normalise with 0.5, RGB -> BGR. The run trains one step at lr 0 (AdamW
then changes no weight: the test checks every backbone tensor is the folder's), so `tag` runs
the model as it was built, through the preprocessing the run recorded.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from train_fixtures import VISUAL, emulator_shards

from train.run import Run
from train.settings import TrainSettings
from train.tag.inference import load_run, predict

timm = pytest.importorskip("timm")
from timm.models._hub import save_for_hf  # noqa: E402

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
    """timm's own loading of the folder, on the folder's preprocessing built with PIL."""
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    batch = []
    for path in paths:
        im = Image.open(path).convert("RGB")
        side = max(im.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(im, ((side - im.width) // 2, (side - im.height) // 2))
        square = square.resize((SIDE, SIDE), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(square, dtype=np.float32) / 255).permute(2, 0, 1)
        x = (x - 0.5) / 0.5
        batch.append(x[[2, 1, 0]])                                  # RGB -> BGR
    with torch.no_grad():
        return torch.sigmoid(model(torch.stack(batch))).numpy()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return emulator_shards(tmp_path_factory.mktemp("wd-init") / "shards", posts=120,
                           size=SIDE)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """PNGs whose long side is the model's: wide and tall ones padded with white, a square."""
    root = tmp_path_factory.mktemp("wd-pictures")
    rng = np.random.default_rng(3)
    paths = []
    for i, (w, h) in enumerate([(SIDE, 40), (36, SIDE), (SIDE, SIDE), (SIDE, 50)]):
        path = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def train_from(folder: Path, shards: Path, out: Path, keep_tags: str = "all") -> Path:
    torch.set_num_threads(1)
    Run(TrainSettings(shards=str(shards), out=str(out), init_from=str(folder),
                      keep_tags=keep_tags, epochs=1, batch_size=16, workers=0, log_every=0,
                      checkpoint_every=0, max_steps=1, lr=0.0, weight_decay=0.0,
                      keep="last", device="cpu")).fit()
    return out


@pytest.mark.parametrize("kind", sorted(FOLDERS))
def test_scores_of_carried_tags_equal_timms_own_loading(kind, tmp_path, shards, pictures):
    architecture, args = FOLDERS[kind]
    folder = write_wd_folder(tmp_path / "wd", architecture, args)
    run = train_from(folder, shards, tmp_path / "run")

    config = json.loads((run / "config.json").read_text())
    norm = config["normalization"]
    assert (norm["channel_order"], norm["pad_color"], norm["interpolation"]) == \
        ("BGR", "white", "bicubic")
    assert norm["mean"] == norm["std"] == [0.5, 0.5, 0.5]
    assert (config["model"], config["image_size"]) == (f"timm:{architecture}", SIDE)

    # no weight moved: every backbone tensor is the folder's
    from safetensors.torch import load_file
    source, kept = load_file(str(folder / "model.safetensors")), \
        load_file(str(run / "model.safetensors"))
    backbone = {k[len("features.model."):]: v for k, v in kept.items()
                if k.startswith("features.model.")}
    assert backbone and all(torch.equal(backbone[k], source[k]) for k in backbone)

    loaded = load_run(run, device="cpu", precision="fp32")
    ours = np.concatenate([b.scores for b in predict(loaded, pictures, batch_size=2,
                                                     workers=0)])
    want = reference_scores(folder, pictures)
    old = RATINGS + OLD_GENERAL + OLD_CHARACTER
    cols = [loaded.names.index(n) for n in old]
    assert want.std() > 0.05                           # scores that tell images apart
    np.testing.assert_allclose(ours[:, cols], want, atol=1e-5, rtol=0)


def base_rate_logit(shards: Path, name: str) -> float:
    """log-odds of `name` among the training samples, counted from the shards' parquet."""
    rows = [labels for f in sorted((shards / "train").glob("*.parquet"))
            for labels in pq.read_table(f, columns=["labels"]).column("labels").to_pylist()]
    p = min(max(sum(name in labels for labels in rows) / len(rows), 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


@pytest.mark.parametrize("keep_tags", ["all", "seen"])
def test_head_grows_and_shrinks_by_tag_name(keep_tags, tmp_path, shards):
    architecture, args = FOLDERS["vit"]
    folder = write_wd_folder(tmp_path / "wd", architecture, args, seed=1)
    run = train_from(folder, shards, tmp_path / "run", keep_tags)

    from safetensors.torch import load_file
    source, kept = load_file(str(folder / "model.safetensors")), \
        load_file(str(run / "model.safetensors"))
    old = RATINGS + OLD_GENERAL + OLD_CHARACTER
    with (run / "tags.csv").open() as f:
        names = [row["name"] for row in csv.DictReader(f)]
    expected = old + ADDED if keep_tags == "all" else list(VISUAL)
    assert names == expected
    for i, name in enumerate(names):
        if name in old:                                # carried: the folder's row, exactly
            j = old.index(name)
            assert torch.equal(kept["head.1.weight"][i], source["head.weight"][j])
            assert torch.equal(kept["head.1.bias"][i], source["head.bias"][j])
        else:                                          # added: bias at the base rate
            assert name in ADDED
            assert float(kept["head.1.bias"][i]) == pytest.approx(
                base_rate_logit(shards, name), abs=1e-5)

    report = json.loads((run / "eval.json").read_text())["init_tags"]
    dropped = [] if keep_tags == "all" else [n for n in old if n not in VISUAL]
    assert report["carried"] == [n for n in names if n in old]
    assert report["added"] == ADDED
    assert report["dropped"] == dropped
    assert not set(dropped) & set(names)
