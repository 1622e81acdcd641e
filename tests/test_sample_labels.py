"""One rule for a sample's labels: train and the report take the `label_ids` make-shards
recorded (read here from the parquet with pyarrow), on shards built where matching the tags
by name again would give other answers (a rating, a tag named like a rating row, a tag listed
twice and in another spelling, multiclass samples with none or several labels)."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from prep.cli import main as prep_main
from shards.labels import read_label_ids
from shards.manifest import read_manifest, split_of
from shards.tags import write_tags
from train.data import ShardStream, Targets, transforms
from train.errors import DataError
from train.models import build_model
from train.report.scores import validation_scores
from train.runs import load_run

torch.set_num_threads(1)

ROWS = [("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9),
        ("red_background", 0), ("orange_background", 0), ("circle", 0), ("square", 0)]
NAMES = [name for name, _ in ROWS]
# (id, rating, tags) and the rows make-shards gives each post, by hand from the README's rule
# (tags in the index in either spelling, the rating against the rating rows, row order, once)
POSTS = [
    (1, "explicit", ["general", "circle"], [3, 6]),           # a tag named like a rating row
    (2, "general", ["orange background", "circle", "circle"], [0, 5, 6]),   # spelling, twice
    (3, "sensitive", ["square", "red_background"], [1, 4, 7]),
    (4, "questionable", ["circle"], [2, 6]),
    (5, None, ["square"], [7]),                               # one label: a class
    (6, None, ["square", "circle"], [6, 7]),                  # two: no class
    (7, None, ["red background"], [4]),                       # one, in another spelling
]
SCHEMA = pa.schema([("site", pa.string()), ("id", pa.int64()), ("md5", pa.string()),
                    ("rating", pa.string()), ("tags", pa.list_(pa.string())),
                    ("image_path", pa.string()), ("status", pa.string())])


def _build(root, val_fraction: str):
    raw = root / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "posts").mkdir()
    records = []
    for post_id, rating, tags, _ in POSTS:
        out = io.BytesIO()
        Image.new("RGB", (24, 20), (30 * post_id, 200 - 20 * post_id, 90)).save(out, "PNG")
        (raw / "images" / f"{post_id}.png").write_bytes(out.getvalue())
        records.append({"site": "danbooru", "id": post_id, "md5": f"m{post_id}",
                        "rating": rating, "tags": tags, "image_path": f"images/{post_id}.png",
                        "status": "downloaded"})
    pq.write_table(pa.Table.from_pylist(records, schema=SCHEMA), raw / "posts" / "p.parquet")
    write_tags(root / "tags.csv", [(-1, name, cat, 1) for name, cat in ROWS])
    out = root / "shards"
    assert prep_main(["make-shards", "--posts", str(raw), "--tags", str(root / "tags.csv"),
                      "--out", str(out), "--image-size", "32", "--workers", "1",
                      "--val-fraction", val_fraction, "-q"]) == 0
    return out


def _recorded(shards, split: str) -> dict[str, list[int]]:
    """{key: label_ids} of the successful rows of every parquet file of the split (pyarrow)."""
    rows = pa.concat_tables(pq.read_table(p) for p in sorted((shards / split).glob("*.parquet")))
    return {r["key"]: r["label_ids"] for r in rows.to_pylist() if r["status"] == "success"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    train = _build(root / "train", "0")
    val = _build(root / "val", "0.99999")
    expected = {f"danbooru_{post_id}": ids for post_id, _, _, ids in POSTS}
    assert _recorded(train, "train") == expected == _recorded(val, "val")  # the cases hold
    return train, val, expected


def _yielded(shards, targets: Targets) -> tuple[dict[str, list[float]], int]:
    """{key: target} from a real DataLoader over the train split, and the samples refused."""
    split = split_of(str(shards), read_manifest(str(shards)), "train")
    stream = ShardStream(split, targets, transforms(16, False), shuffle=False, exact=False,
                         batch_size=2)
    got = {}
    for _, target, keys in DataLoader(stream, batch_size=2):
        got.update(zip(keys, target.tolist(), strict=True))
    return got, int(stream.errors.sum())


def _multi_hot(ids, size=len(NAMES)) -> list[float]:
    return [float(i in ids) for i in range(size)]


def test_train_multilabel_targets_are_the_recorded_label_ids(built):
    train, _, expected = built
    got, refused = _yielded(train, Targets(NAMES, "multilabel"))
    assert refused == 0
    assert got == {k: _multi_hot(ids) for k, ids in _recorded(train, "train").items()}
    assert read_label_ids(train, "train") == expected       # the plain reader agrees


@pytest.mark.parametrize("positive", ["general", "orange_background", "circle"])
def test_train_binary_target_is_the_positive_row_among_label_ids(built, positive):
    train, _, _ = built
    got, _ = _yielded(train, Targets(NAMES, "binary", positive))
    row = NAMES.index(positive)
    assert got == {k: [float(row in ids)] for k, ids in _recorded(train, "train").items()}


def test_train_multiclass_takes_the_one_label_and_refuses_none_or_several(built):
    train, _, _ = built
    got, refused = _yielded(train, Targets(NAMES, "multiclass"))
    recorded = _recorded(train, "train")
    assert got == {k: _multi_hot(ids) for k, ids in recorded.items() if len(ids) == 1}
    assert refused == sum(len(ids) != 1 for ids in recorded.values()) == 5


def _run(folder, task: str, outputs: int, positive: str | None = None):
    folder.mkdir()
    write_tags(folder / "tags.csv", [(-1, name, cat, 1) for name, cat in ROWS])
    (folder / "config.json").write_text(json.dumps(
        {"model": "resnet18", "task": task, "image_size": 32, "positive": positive}))
    save_file(build_model("resnet18", outputs, weights="none").state_dict(),
              str(folder / "model.safetensors"))
    return load_run(folder, device="cpu")


@pytest.mark.parametrize("task,positive", [("multilabel", None), ("binary", "general")])
def test_the_report_judges_against_the_recorded_label_ids(built, tmp_path, task, positive):
    _, val, _ = built
    outputs = 1 if task == "binary" else len(NAMES)
    scores = validation_scores(_run(tmp_path / "run", task, outputs, positive), str(val),
                               quiet=True)
    recorded = _recorded(val, "val")
    truth = {k: (_multi_hot(ids) if task != "binary" else [float(NAMES.index(positive) in ids)])
             for k, ids in recorded.items()}
    assert {k: t.astype(float).tolist() for k, t in zip(scores.keys, scores.targets,
                                                         strict=True)} == truth
    names = [positive] if task == "binary" else NAMES
    assert dict(zip(scores.keys, scores.tags, strict=True)) == {
        k: [NAMES[i] for i in ids if NAMES[i] in names] for k, ids in recorded.items()}


def test_shards_without_label_ids_fail_with_a_clear_message(tmp_path):
    import webdataset as wds

    from shards.manifest import Split
    url = str(tmp_path / "00000.tar")
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG")
    with wds.TarWriter(url) as tw:
        tw.write({"__key__": "old_1", "jpg": out.getvalue(),
                  "json": json.dumps({"tags": ["circle"]}).encode()})
    stream = ShardStream(Split([url], 1, [1]), Targets(NAMES, "multilabel"),
                         transforms(8, False), shuffle=False, exact=False)
    with pytest.raises(DataError, match="sample old_1 has no 'label_ids'.*rebuild them"):
        list(stream)
