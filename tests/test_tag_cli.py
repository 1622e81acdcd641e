"""`tag` end to end on CPU: tiny runs trained in seconds, real image files, real tables."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from support.train_fixtures import emulator_shards, write_shards

from train.cli import main as train_main
from train.run import Run
from train.runs import load_run
from train.settings import TrainSettings
from train.tag.cli import main
from train.tag.inference import load_picture

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 60, 230)}
BASE = dict(model="resnet18", weights="none", batch_size=32, workers=0, lr=2e-3, log_every=0,
            shuffle_buffer=200, checkpoint_every=0)


def _colour_image(name: str, rng, size=(32, 32)) -> Image.Image:
    noise = rng.integers(0, 60, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.array(COLOURS[name]) + noise - 30, 0, 255)
                           .astype(np.uint8))


def _colour_shards(root, task):
    rng = np.random.default_rng(0)
    rows = {"train": [], "val": []}
    for i in range(120):
        name = list(COLOURS)[i % 3]
        out = io.BytesIO()
        _colour_image(name, rng).save(out, "JPEG")
        rows["val" if i % 5 == 0 else "train"].append((f"{i:09d}", out.getvalue(),
                                                       {"tags": [name]}))
    return write_shards(root, rows, [(c, 0) for c in COLOURS], per_shard=60, task=task)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A multilabel run (emulator images, barely trained) and binary and multiclass colour
    runs (16 px, good enough to sort colours)."""
    root = tmp_path_factory.mktemp("runs")
    shards = emulator_shards(root / "shards", posts=150, size=32)
    Run(TrainSettings(shards=str(shards), out=str(root / "multilabel"), image_size=32,
                      epochs=1, max_steps=2, **BASE)).fit()
    colours = _colour_shards(root / "colours", "multiclass")
    for task in ("binary", "multiclass"):
        # 4 epochs: after 2 (12 steps from scratch) BatchNorm's running statistics still lean
        # on their initial values, so the eval-mode scores rank right but are miscalibrated
        Run(TrainSettings(shards=str(colours), out=str(root / task), image_size=16, epochs=4,
                          task=task, positive="red" if task == "binary" else None,
                          **{**BASE, "batch_size": 16})).fit()
    return root


@pytest.fixture
def pics(tmp_path):
    """3 images of each colour, a transparent PNG and a corrupt file."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "pics"
    (folder / "more").mkdir(parents=True)
    for name in COLOURS:
        for i in range(3):
            sub = folder / "more" if i == 2 else folder
            _colour_image(name, rng, (40, 40)).save(sub / f"{name}{i}.jpg", quality=95)
    red = np.array(_colour_image("red", rng, (20, 20)))
    Image.fromarray(np.dstack([red, np.full((20, 20), 255, np.uint8)])).save(folder / "alpha.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 10)
    return folder


def _tag(*argv) -> int:
    return main([*map(str, argv), "--workers", "0", "-q"])


def test_the_colour_runs_learned_their_task(runs):
    """Binary (one output) and multiclass runs on shards with a task: both sort the colours
    of their validation split (the runs every test below tags with)."""
    from safetensors.torch import load_file
    for task in ("binary", "multiclass"):
        report = json.loads((runs / task / "eval.json").read_text())
        assert report["task"] == task and report["mAP"] > 0.9, (task, report["mAP"])
    head = load_file(str(runs / "binary" / "model.safetensors"))["head.1.weight"]
    assert head.shape[0] == 1


def test_output_formats_hold_the_same_rows(runs, pics, tmp_path, capsys):
    model = runs / "multilabel"
    for suffix in ("parquet", "csv", "jsonl"):
        assert _tag("--model", model, pics, "--output", tmp_path / f"t.{suffix}",
                    "--threshold", "0.3") == 0
    out = capsys.readouterr()
    assert "broken.jpg" in out.err and "11 images" in out.out and "1 unreadable" in out.out
    table = pd.read_parquet(tmp_path / "t.parquet")
    lines = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert list(table.columns) == ["path", "tags", "scores", "error"]
    assert len(table) == len(lines) == len(rows) == 11
    assert table["path"].tolist() == [r["path"] for r in lines] == [r["path"] for r in rows]
    assert table["path"].iloc[0].endswith("alpha.png")                 # sorted, recursive
    assert any(p.endswith("more/red2.jpg") for p in table["path"])
    names = [r["name"] for r in csv.DictReader((model / "tags.csv").open())]
    for parquet_row, line, row in zip(table.itertuples(), lines, rows, strict=True):
        if parquet_row.path.endswith("broken.jpg"):
            assert line["error"] and row["error"] and not line["tags"] and row["tags"] == ""
            continue
        scores = list(parquet_row.scores)
        assert scores == sorted(scores, reverse=True) and min(scores) >= 0.3
        assert list(parquet_row.tags) == line["tags"] == row["tags"].split(", ")
        assert set(line["tags"]) <= set(names) and line["error"] is None
        assert np.allclose(scores, [float(s) for s in row["scores"].split(", ")], atol=1e-4)
    assert not list(tmp_path.glob(".*.tmp"))


def test_scores_are_the_models_probabilities(runs, pics, tmp_path):
    model = runs / "multilabel"
    assert _tag("--model", model, pics / "red0.jpg", "--threshold", "0",
                "--output", tmp_path / "t.jsonl") == 0
    row = json.loads((tmp_path / "t.jsonl").read_text())
    run = load_run(model, device="cpu")
    x = load_picture((pics / "red0.jpg").read_bytes(), 32).float().unsqueeze(0) / 255
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        want = torch.sigmoid(run.model((x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)))[0]
    got = dict(zip(row["tags"], row["scores"], strict=True))
    assert len(got) == len(run.names)                     # threshold 0: every tag
    assert all(abs(got[n] - float(want[i])) < 1e-4 for i, n in enumerate(run.names))


def test_per_tag_and_per_category_thresholds_from_the_run(runs, pics, tmp_path):
    model = tmp_path / "run"
    shutil.copytree(runs / "multilabel", model)
    report = json.loads((model / "eval.json").read_text())
    n = len(report["per_tag"]["threshold"])
    report["per_tag"]["threshold"] = [0.0, 0.0] + [1.01] * (n - 2)
    (model / "eval.json").write_text(json.dumps(report))
    assert _tag("--model", model, pics, "--per-tag-thresholds", "--output",
                tmp_path / "a.jsonl") == 0
    names = [r["name"] for r in csv.DictReader((model / "tags.csv").open())]
    rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert all(sorted(r["tags"]) == sorted(names[:2]) for r in rows if not r["error"])
    # make tag 2 a character tag and tags 3..6 the ratings
    lines = (model / "tags.csv").read_text().splitlines()
    for i, category in ((3, 4), (4, 9), (5, 9), (6, 9), (7, 9)):
        parts = lines[i].split(",")
        lines[i] = ",".join([parts[0], parts[1], str(category), parts[3]])
    (model / "tags.csv").write_text("\n".join(lines) + "\n")
    assert _tag("--model", model, pics, "--threshold", "0", "--general-threshold", "1",
                "--character-threshold", "0", "--output", tmp_path / "b.jsonl") == 0
    rows = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    for r in (r for r in rows if not r["error"]):
        assert len(r["tags"]) == 2 and names[2] in r["tags"]      # the character, one rating
        assert set(r["tags"]) - {names[2]} <= set(names[3:7])


def test_captions_beside_each_image_kept_unless_overwrite(runs, pics, tmp_path):
    model = runs / "multilabel"
    (pics / "green0.txt").write_text("hand written\n")
    assert _tag("--model", model, pics, "--captions", "--threshold", "0.2", "--trigger",
                "mona", "--underscores-to-spaces", "--output", tmp_path / "t.jsonl") == 0
    rows = {json.loads(x)["path"]: json.loads(x)
            for x in (tmp_path / "t.jsonl").read_text().splitlines()}
    assert (pics / "green0.txt").read_text() == "hand written\n"
    assert not (pics / "broken.txt").exists()
    text = (pics / "more" / "red2.txt").read_text()
    tags = rows[str(pics / "more" / "red2.jpg")]["tags"]
    assert text == ", ".join(["mona"] + [t.replace("_", " ") if len(t) > 3 else t
                                         for t in tags]) + "\n"
    assert "\n" not in text.rstrip("\n")
    assert _tag("--model", model, pics, "--captions", "--threshold", "0.2",
                "--overwrite") == 0
    assert (pics / "green0.txt").read_text().strip() == \
        ", ".join(rows[str(pics / "green0.jpg")]["tags"])


def test_sort_into_binary_dry_run_then_copy_then_no_overwrite(runs, pics, tmp_path, capsys):
    model, dest = runs / "binary", tmp_path / "sorted"
    assert _tag("--model", model, pics, "--sort-into", dest) == 0
    out = capsys.readouterr().out
    assert not dest.exists() and "would copy" in out and "dry run" in out
    assert _tag("--model", model, pics, "--sort-into", dest, "--apply") == 0
    red = sorted(str(p.relative_to(dest / "red")) for p in (dest / "red").rglob("*")
                 if p.is_file())
    assert red == ["alpha.png", "more/red2.jpg", "red0.jpg", "red1.jpg"]   # subfolder kept
    not_red = sorted(p for p in (dest / "not_red").rglob("*") if p.is_file())
    assert len(not_red) == 6
    assert (pics / "red0.jpg").exists()                               # copied, not moved
    (dest / "red" / "red0.jpg").write_bytes(b"mine")
    capsys.readouterr()
    assert _tag("--model", model, pics, "--sort-into", dest, "--apply") == 0
    assert "9 already there" in capsys.readouterr().out
    assert (dest / "red" / "red0.jpg").read_bytes() == b"mine"        # never overwritten
    assert (dest / "red" / "red0_1.jpg").read_bytes() == (pics / "red0.jpg").read_bytes()
    assert sorted(p for p in (dest / "not_red").rglob("*") if p.is_file()) == not_red
    before = sorted(p for p in dest.rglob("*") if p.is_file())
    assert _tag("--model", model, pics, "--sort-into", dest, "--apply") == 0   # a third time
    assert sorted(p for p in dest.rglob("*") if p.is_file()) == before


def test_sort_into_keeps_subfolders_apart(runs, tmp_path):
    """Two images of the same name in different subfolders land in their own subfolders, byte
    for byte, instead of one becoming x_1.jpg beside the other."""
    rng = np.random.default_rng(3)
    src, dest = tmp_path / "in", tmp_path / "sorted"
    for sub in ("a", "b"):
        (src / sub).mkdir(parents=True)
        _colour_image("red", rng, (40, 40)).save(src / sub / "x.jpg", quality=95)
    assert _tag("--model", runs / "multiclass", src, "--sort-into", dest, "--apply") == 0
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert found == ["red/a/x.jpg", "red/b/x.jpg"]
    for sub in ("a", "b"):
        assert (dest / "red" / sub / "x.jpg").read_bytes() == (src / sub / "x.jpg").read_bytes()


def test_sort_into_multiclass_moves_images_into_class_folders(runs, pics, tmp_path, capsys):
    dest = pics / "sorted"                     # inside the input: never scanned as input
    assert _tag("--model", runs / "multiclass", pics, "--sort-into", dest, "--move",
                "--apply") == 0
    for colour in COLOURS:
        assert sorted(str(p.relative_to(dest / colour)) for p in (dest / colour).rglob("*.jpg")) \
            == sorted([f"{colour}0.jpg", f"{colour}1.jpg", f"more/{colour}2.jpg"])
    assert sorted(p.name for p in pics.rglob("*") if p.is_file() and dest not in p.parents) \
        == ["broken.jpg"]                                             # unreadable: left
    assert "moved" in capsys.readouterr().out


def test_embeddings_are_the_pooled_features(runs, pics, tmp_path):
    model = runs / "multilabel"
    assert _tag("--model", model, pics, "--embed", tmp_path / "e.parquet",
                "--batch-size", "4") == 0
    table = pd.read_parquet(tmp_path / "e.parquet")
    assert len(table) == 10 and not table["path"].str.endswith("broken.jpg").any()
    vectors = np.stack(table["embedding"].to_numpy())
    assert vectors.shape == (10, 512) and vectors.dtype == np.float32
    run = load_run(model, device="cpu")
    i = int(table.index[table["path"].str.endswith("blue1.jpg")][0])
    x = load_picture((pics / "blue1.jpg").read_bytes(), 32).float().unsqueeze(0)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    with torch.no_grad():
        want = run.model.embed((x - mean) / std)[0].numpy()
    assert np.allclose(vectors[i], want, atol=1e-4)


def test_workers_decode_in_other_processes_with_the_same_result(runs, pics, tmp_path):
    model = runs / "multiclass"
    assert main(["--model", str(model), str(pics), "--workers", "2", "--batch-size", "3",
                 "--output", str(tmp_path / "a.parquet"), "-q"]) == 0
    assert _tag("--model", model, pics, "--output", tmp_path / "b.parquet") == 0
    a, b = pd.read_parquet(tmp_path / "a.parquet"), pd.read_parquet(tmp_path / "b.parquet")
    assert a["path"].tolist() == b["path"].tolist()
    assert a["tags"].map(list).tolist() == b["tags"].map(list).tolist()


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "{tmp}/nothing", "{pics}"], "no such run folder"),
    (["--model", "{tmp}", "{pics}"], "no config.json"),
    (["--model", "{runs}/multilabel", "{tmp}/empty"], "no images found"),
    (["--model", "{runs}/multilabel", "{tmp}/missing.jpg"], "no such file or folder"),
    (["--model", "{runs}/multilabel", "{pics}", "--threshold", "1.5"], "between 0 and 1"),
    (["--model", "{runs}/multilabel", "{pics}", "--apply"], "goes with --sort-into"),
    (["--model", "{runs}/multilabel", "{pics}", "--trigger", "x"], "add --captions"),
    (["--model", "{runs}/multilabel", "{pics}", "--output", "{tmp}/t.xlsx"], ".parquet"),
    (["--model", "{runs}/multilabel", "{pics}", "--embed", "{tmp}/e.csv"], ".parquet"),
    (["--model", "{runs}/multilabel", "{pics}", "--sort-into", "{tmp}/s"], "multilabel"),
    (["--model", "{runs}/multilabel", "{pics}", "--threshold", "0.3",
      "--per-tag-thresholds"], "not allowed with"),
    (["--model", "{runs}/multilabel", "{pics}", "--device", "cuda:99"], "cuda"),
])
def test_cli_errors_are_one_line_with_exit_2(runs, pics, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    if "cuda" in argv and torch.cuda.device_count() > 99:
        pytest.skip("a machine with 100 GPUs")
    args = [a.format(tmp=tmp_path, pics=pics, runs=runs) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    if "not allowed" not in message:                    # argparse's own errors have usage
        assert err.startswith("tag: ") and err.count("\n") == 1


def test_python_m_train_tag_dispatches(runs, pics, capsys):
    assert train_main(["tag", "--model", str(runs / "binary"), str(pics / "red1.jpg"),
                       "--workers", "0"]) == 0
    assert "red1.jpg: red " in capsys.readouterr().out
