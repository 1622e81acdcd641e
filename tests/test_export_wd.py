"""`train export --format wd-onnx` and `tag --model` on a WD-tagger folder.

The exported folder is run the way the WD taggers' consumers run it: kohya-ss sd-scripts'
`finetune/tag_images_by_wd14_tagger.py` preprocessing and tag selection, reproduced below from
its source (the reference that always runs), and dghs-imgutils' own preprocessing, model loader
and MCut when that package is installed (support/wd_consumer.py).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from support import wd_consumer
from support.train_fixtures import tiny_run

from train.cli import main
from train.export.wd_writer import wd_order
from train.runs import load_run
from train.tag.inference import input_images, predict
from train.tag.selection import mcut_threshold

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

SIDE = 32
# rows of the run's tags.csv given other categories after training (they do not change the
# model): four ratings out of order and two characters
CATEGORIES = {1: 9, 2: 9, 4: 9, 5: 9, 3: 4, 7: 4}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tiny_run(tmp_path_factory, tmp_path_factory.mktemp("wd") / "copy", side=SIDE)
    tags = run / "tags.csv"
    rows = list(csv.reader(tags.open()))
    for i, cat in CATEGORIES.items():
        rows[i + 1][2] = str(cat)
    with tags.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return run


@pytest.fixture(scope="module")
def wd_dir(run_dir):
    assert main(["export", "--model", str(run_dir), "--format", "wd-onnx", "-q"]) == 0
    return run_dir / "wd-tagger"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """PNG pictures whose long side is the model's side, so no tool resizes them: square
    ones, and wide and tall ones that each tool pads with white."""
    folder = tmp_path_factory.mktemp("pics")
    rng = np.random.default_rng(5)
    for i, (h, w) in enumerate([(SIDE, SIDE), (SIDE, 20), (17, SIDE), (SIDE, SIDE),
                                (SIDE, 31), (24, SIDE)]):
        pixels = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        pixels[: h // 2, : w // 2] = rng.integers(0, 255, 3)          # a flat block
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return sorted(folder.glob("*.png"))


# -- kohya-ss sd-scripts finetune/tag_images_by_wd14_tagger.py, reproduced -------------------
def kohya_preprocess(path, image_size: int) -> np.ndarray:
    """kohya's preprocess_image: RGB -> BGR, pad to a square with 255 (half the padding
    before), resize to the model size (not needed here: the pictures are at it), float32."""
    image = np.array(Image.open(path).convert("RGB"))[:, :, ::-1]
    size = max(image.shape[0:2])
    pad_x, pad_y = size - image.shape[1], size - image.shape[0]
    pad_l, pad_t = pad_x // 2, pad_y // 2
    image = np.pad(image, ((pad_t, pad_y - pad_t), (pad_l, pad_x - pad_l), (0, 0)),
                   mode="constant", constant_values=255)
    assert size == image_size, "the reference resize is left out: give pictures at the side"
    return image.astype(np.float32)


def kohya_tags(csv_path, probs: np.ndarray, general: float, character: float) -> list[str]:
    """kohya's run_batch for one image: the first four outputs are ratings (argmax, with
    --use_rating_tags), then general tags >= general, then characters >= character."""
    with open(csv_path, encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    assert header[:3] == ["tag_id", "name", "category"]
    rating_tags = [r[1] for r in rows if r[2] == "9"]
    general_tags = [r[1] for r in rows if r[2] == "0"]
    character_tags = [r[1] for r in rows if r[2] == "4"]
    combined = []
    for i, p in enumerate(probs[4:]):
        if i < len(general_tags) and p >= general:
            combined.append(general_tags[i])
        elif i >= len(general_tags) and p >= character:
            combined.append(character_tags[i - len(general_tags)])
    combined.insert(0, rating_tags[int(probs[:4].argmax())])
    return combined


def run_session(folder, batch: np.ndarray) -> np.ndarray:
    """As kohya runs the model: the input name from the graph, the first output."""
    session = ort.InferenceSession(str(folder / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def tag_scores(run_dir, images) -> dict[str, np.ndarray]:
    """`tag`'s probabilities for each picture, by tag name."""
    run = load_run(run_dir, device="cpu", precision="fp32")
    (batch,) = list(predict(run, images, batch_size=16, workers=0))
    return {name: batch.scores[:, j] for j, name in enumerate(run.names)}


def test_wd_order_puts_ratings_general_characters_and_folds_the_rest():
    order, wd = wd_order([0, 9, 3, 4, 9, 1, 5, 0])
    assert order == [1, 4, 0, 2, 5, 6, 7, 3]
    assert wd == [9, 9, 0, 0, 0, 0, 0, 4]          # artist, copyright, meta -> general


def test_folder_follows_the_wd_contract(wd_dir, run_dir):
    rows = list(csv.DictReader((wd_dir / "selected_tags.csv").open(encoding="utf-8")))
    assert list(rows[0]) == ["tag_id", "name", "category", "count"]
    cats = [int(r["category"]) for r in rows]
    assert cats == [9] * 4 + [0] * 6 + [4] * 2                 # ratings, general, characters
    names = [r["name"] for r in rows]
    run_rows = list(csv.DictReader((run_dir / "tags.csv").open()))
    assert sorted(names) == sorted(r["name"] for r in run_rows)
    assert names[:4] == [run_rows[i]["name"] for i in (1, 2, 4, 5)]   # run order kept
    session = ort.InferenceSession(str(wd_dir / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.type == "tensor(float)" and inp.shape[1:] == [SIDE, SIDE, 3]
    assert isinstance(inp.shape[0], str)                       # dynamic batch
    assert session.get_outputs()[0].shape[1] == len(rows)


def test_kohya_reference_scores_within_1e4_of_tag(wd_dir, run_dir, images):
    side = ort.InferenceSession(str(wd_dir / "model.onnx"),
                                providers=["CPUExecutionProvider"]).get_inputs()[0].shape[1]
    probs = run_session(wd_dir, np.stack([kohya_preprocess(p, side) for p in images]))
    names = [r["name"] for r in csv.DictReader((wd_dir / "selected_tags.csv").open())]
    want = tag_scores(run_dir, images)
    diff = max(float(np.abs(probs[:, j] - want[name]).max()) for j, name in enumerate(names))
    assert diff < 1e-4
    assert probs.min() >= 0 and probs.max() <= 1


def test_kohya_reference_tags_equal_tag_output(wd_dir, run_dir, images, tmp_path):
    probs = run_session(wd_dir, np.stack([kohya_preprocess(p, SIDE) for p in images]))
    candidates = np.linspace(0.3, 0.7, 81)                     # the one farthest from a score
    threshold = float(max(candidates, key=lambda t: np.abs(probs - t).min()))
    out = tmp_path / "tags.jsonl"
    assert main(["tag", "--model", str(run_dir), *map(str, images), "--threshold",
                 str(threshold), "--output", str(out), "--workers", "0", "-q"]) == 0
    ours = [json.loads(line) for line in out.read_text().splitlines()]
    for row, p in zip(ours, probs, strict=True):
        assert sorted(row["tags"]) == sorted(kohya_tags(wd_dir / "selected_tags.csv", p,
                                                        threshold, threshold))


def test_tag_runs_on_the_wd_folder_like_on_the_run(wd_dir, run_dir, images, tmp_path):
    # low thresholds: the tiny run's head starts at each tag's base rate, so its scores are low
    options = {"plain": ["--threshold", "0.05"], "mcut": ["--mcut"],
               "top-k": ["--threshold", "0.05", "--top-k", "2", "--exclude", "circle"]}
    got = {}
    for name, model in (("run", run_dir), ("wd", wd_dir)):
        for key, flags in options.items():
            out = tmp_path / f"{name}-{key}.jsonl"
            assert main(["tag", "--model", str(model), str(images[0].parent), "--output",
                         str(out), "--workers", "0", "-q", *flags]) == 0
            got[name, key] = [json.loads(x) for x in out.read_text().splitlines()]
    for key in options:
        for a, b in zip(got["run", key], got["wd", key], strict=True):
            assert a["path"] == b["path"] and a["tags"] == b["tags"]
            np.testing.assert_allclose(a["scores"], b["scores"], rtol=0, atol=1e-4)
    assert any(len(r["tags"]) > 3 for r in got["wd", "plain"])
    assert all(len(r["tags"]) <= 2 + 2 + 1 for r in got["wd", "top-k"])     # 2 per category
    assert all("circle" not in r["tags"] for r in got["wd", "top-k"])


def test_wd_folder_errors(wd_dir, tmp_path, capsys):
    assert main(["tag", "--model", str(wd_dir), str(tmp_path), "--workers", "0"]) == 2
    assert "no images found" in capsys.readouterr().err
    assert main(["tag", "--model", str(wd_dir), str(tmp_path / "missing"), "--embed",
                 str(tmp_path / "e.parquet"), "--workers", "0"]) == 2
    assert "no embedding output" in capsys.readouterr().err      # before looking for images
    assert not list(tmp_path.glob(".e.parquet*"))
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert main(["tag", "--model", str(wd_dir), str(tmp_path / "a.png"), "--embed",
                 str(tmp_path / "e.parquet"), "--workers", "0"]) == 2
    assert "no embedding output" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.onnx").write_bytes(b"not onnx")
    (bad / "selected_tags.csv").write_text("tag_id,name,category,count\n1,a,0,1\n")
    assert main(["tag", "--model", str(bad), str(tmp_path / "a.png")]) == 2
    assert "onnxruntime cannot load it" in capsys.readouterr().err


def test_multiclass_runs_are_refused(run_dir, tmp_path, capsys):
    config = json.loads((run_dir / "config.json").read_text())
    multiclass = tmp_path / "multiclass"
    multiclass.mkdir()
    for name in ("tags.csv", "model.safetensors"):
        (multiclass / name).write_bytes((run_dir / name).read_bytes())
    (multiclass / "config.json").write_text(json.dumps({**config, "task": "multiclass"}))
    assert main(["export", "--model", str(multiclass), "--format", "wd-onnx"]) == 2
    assert "use --format onnx" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["export", "--model", str(run_dir), "--format", "wd-onnx", "--out",
                 str(tmp_path / "file")]) == 2
    assert "a file is there" in capsys.readouterr().err


def test_dghs_imgutils_runs_the_folder(wd_dir, run_dir, images):
    if not wd_consumer.installed():
        pytest.skip(f"no dghs-imgutils environment at {wd_consumer.WD_PYTHON} (make "
                    "wd-consumer): the kohya reference above still checks the folder")
    out = wd_consumer.run_consumer(wd_dir / "model.onnx", input_images(images))
    probs = np.array(out["probs"], dtype=np.float32)
    names = [r["name"] for r in csv.DictReader((wd_dir / "selected_tags.csv").open())]
    want = tag_scores(run_dir, input_images(images))
    assert max(float(np.abs(probs[:, j] - want[n]).max()) for j, n in enumerate(names)) < 1e-4
    for row, theirs in zip(probs, out["mcut"], strict=True):      # MCut over general tags
        assert mcut_threshold(row[4:10]) == pytest.approx(theirs)
