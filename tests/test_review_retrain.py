"""The review loop end to end, as the README shows it: a trained run tags a folder in the
demo's caption style (`--underscores-to-spaces`), a correction goes through the review app's
own HTTP API, then the app's two retrain commands run as printed (`prep make-shards --folder
... --tags run/tags.csv`, `train --init-from`). Every caption tag the run's tags.csv knows, and
the correction, must be a label of the new shards: the parquet labels are compared with the
caption files read here, by this test's own reading of the caption spellings."""

from __future__ import annotations

import io
import json
import shlex
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from support.report_fixtures import cached_run
from support.review_server import Served, post_json

from prep.cli import main as prep_main
from shards import read_shards
from train.cli import main as train_main
from train.tag.cli import main as tag_main
from train.tag.review.cli import build_parser, prepare
from train.tag.review.server import make_app

pytestmark = pytest.mark.heavy        # the small training run, then a one-epoch retrain


def _caption_tags(text: str) -> list[str]:
    """A caption file as kohya's trainers read it: comma-separated tags."""
    return [t.strip() for t in text.replace("\n", ",").split(",") if t.strip()]


def _as_row_name(tag: str) -> str:
    """A caption tag in tags.csv's spelling: `long hair` is `long_hair`, `\\(` is `(`."""
    return tag.replace("\\(", "(").replace("\\)", ")").replace(" ", "_")


def test_review_then_retrain_keeps_every_known_caption_tag_and_the_correction(
        tmp_path_factory, tmp_path):
    run = cached_run(tmp_path_factory)
    names = [line.split(",")[1] for line in (run / "tags.csv").read_text().splitlines()[1:]]
    pics = tmp_path / "pics"
    pics.mkdir()
    for n, sample in zip(range(16), read_shards(run.parent / "shards", "val", image="bytes"),
                         strict=False):
        Image.open(io.BytesIO(sample["image"])).save(pics / f"img{n:02d}.png")
    # tag, in the demo's caption style
    assert tag_main(["--model", str(run), str(pics), "--captions", "--underscores-to-spaces",
                     "--threshold", "0.2", "--workers", "0", "-q"]) == 0
    written = {p.name: _caption_tags(p.read_text()) for p in pics.glob("*.txt")}
    assert len(written) == 16
    assert any(" " in t for tags in written.values() for t in tags)   # the spelling matters

    # a correction through the review app's HTTP API: add a tag the picture's caption lacks,
    # typed as the caption style writes it, and remove one it has
    store, info, _, _ = prepare(build_parser().parse_args(
        [str(pics), "--model", str(run), "--underscores-to-spaces", "--workers", "0"]))
    served = Served(make_app(store, info))
    try:
        with urllib.request.urlopen(served.url + "api/state", timeout=30) as r:
            image = next(s for s in json.loads(r.read())["images"] if s["path"] == "img00.png")
        missing = next(n for n in names if n not in image["caption"] and "_" in n)
        removed = image["caption"][0]
        reply = post_json(served.url + "api/edit", {
            "items": [{"id": image["id"], "version": image["version"]}],
            "add": [missing.replace("_", " ")], "remove": [removed]})
        assert [r["status"] for r in reply["results"]] == ["saved"]
    finally:
        served.close()
    corrected = _caption_tags((pics / "img00.txt").read_text())
    assert missing.replace("_", " ") in corrected and removed not in corrected

    # the retrain commands the app shows, as given (plus quiet, in-process, tiny settings)
    make, train = (shlex.split(line) for line in info["retrain"].splitlines())
    assert make[:2] == ["prep", "make-shards"] and train[:2] == ["train", "--stream"]
    assert prep_main([*make[1:], "--workers", "0", "-q"]) == 0
    shards = make[make.index("--out") + 1]
    labels = {}
    for part in sorted((tmp_path / "pics-shards").glob("*/*.parquet")):
        for row in pq.read_table(part).to_pylist():
            assert row["status"] == "success", row
            labels[row["image_path"]] = row["labels"]
    assert shards == str(tmp_path / "pics-shards") and len(labels) == 16
    for name, tags in ((p.name, _caption_tags(p.read_text())) for p in pics.glob("*.txt")):
        expected = [n for n in names if n in {_as_row_name(t) for t in tags}]
        assert labels[name.replace(".txt", ".png")] == expected, name
    assert missing in labels["img00.png"] and removed not in labels["img00.png"]

    out = Path(train[train.index("--out") + 1])
    assert train_main([*train[1:], "--epochs", "1", "--batch-size", "8", "--workers", "0",
                       "-q"]) == 0
    assert json.loads((out / "config.json").read_text())["init_from"] == str(run.resolve())
    assert (out / "model.safetensors").is_file()
