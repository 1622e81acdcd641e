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
from support.train_fixtures import VISUAL, emulator_shards
from support.wd_fixtures import (
    ADDED,
    FOLDERS,
    OLD_CHARACTER,
    OLD_GENERAL,
    RATINGS,
    SIDE,
    reference_scores,
    train_from,
    write_pictures,
    write_wd_folder,
)

from train.runs import load_run
from train.tag.inference import predict

pytest.importorskip("timm")

@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return emulator_shards(tmp_path_factory.mktemp("wd-init") / "shards", posts=120,
                           size=SIDE)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return write_pictures(tmp_path_factory.mktemp("wd-pictures"))


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

    if keep_tags == "seen":                        # the report names them too
        from train.report.cli import main as report_main
        assert report_main(["--model", str(run), "--examples", "2", "-q"]) == 0
        html = (run / "report" / "index.html").read_text()
        assert f"{len(ADDED)} added ({', '.join(ADDED)})" in html
        assert f"{len(dropped)} dropped ({', '.join(dropped)})" in html
        assert "BGR, mean [0.5, 0.5, 0.5]" in html
