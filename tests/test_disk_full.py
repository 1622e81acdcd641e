"""A full disk in every command: one line naming the file and saying "no space left", exit code
1, no temporary file left behind, and the same command (train: with --resume) finishes the
job once space is freed, with the result of a run that never failed.

The disk fills at an exact write (tests/disk_faults.py); the commands run in-process on the
emulator's posts, real parquet and tar files, and a tiny resnet18 on CPU.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pytest
from support.disk_faults import FullDisk
from support.scrape_runs import scrape
from support.train_fixtures import emulator_shards

from cli_kit.disk_full import no_space, no_space_line, writing
from prep.cli import main as prep_main
from train.cli import main as train_main
from train.tag.cli import main as tag_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def one_line(capsys, prog: str, path: Path | str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: no space left on device writing ")
    assert str(path) in lines[0], lines[0]
    return lines[0]


def temporaries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.name.endswith((".tmp", ".part")))


def test_the_full_disk_error_is_found_behind_the_errors_it_caused():
    try:
        try:
            with writing("out/posts.parquet"):
                raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as first:
            raise RuntimeError("closing the writer failed too") from first
    except RuntimeError as second:
        found = no_space(second)
    assert isinstance(found, OSError) and found.filename == "out/posts.parquet"
    assert no_space_line("prep", found) == ("prep: no space left on device writing "
                                            "out/posts.parquet; free some space and run the "
                                            "same command again to finish")
    assert no_space(RuntimeError("another problem")) is None


# -- scrape, make-tag-index, make-shards -----------------------------------------------------

@pytest.fixture(scope="module")
def raw(emulator, tmp_path_factory):
    """An uninterrupted scrape of 40 posts: the reference."""
    out = tmp_path_factory.mktemp("reference") / "raw"
    assert scrape(emulator, "danbooru", "", out, "--limit", "40") == 0
    return out


def _latest(raw: Path) -> dict[int, tuple]:
    rows = pd.read_parquet(raw / "posts").sort_values("scraped_at")
    return {r.id: (r.status, r.md5, r.image_path) for r in rows.itertuples()}


def _images(raw: Path) -> dict[str, bytes]:
    return {p.relative_to(raw).as_posix(): p.read_bytes()
            for p in sorted((raw / "images").rglob("*")) if p.is_file()}


def test_scrape_on_a_full_disk(emulator, raw, tmp_path, monkeypatch, capsys):
    out = tmp_path / "raw"
    disk = FullDisk(monkeypatch, name=".part", after=5)       # the 6th image file fails
    assert scrape(emulator, "danbooru", "", out, "--limit", "40") == 1
    line = one_line(capsys, "scrape", out / "images")
    assert "Traceback" not in line and disk.failures >= 2      # the rows' part failed too
    assert temporaries(out) == []
    disk.free()
    assert scrape(emulator, "danbooru", "", out, "--limit", "40") == 0
    assert _latest(out) == _latest(raw)
    assert _images(out) == _images(raw)


def test_make_tag_index_on_a_full_disk(raw, tmp_path, monkeypatch, capsys):
    assert prep_main(["make-tag-index", "--posts", str(raw), "--top-k", "100", "--out",
                      str(tmp_path / "ref.csv"), "-q"]) == 0
    out = tmp_path / "tags.csv"
    capsys.readouterr()
    disk = FullDisk(monkeypatch, name="tags.csv")
    index = ["make-tag-index", "--posts", str(raw), "--top-k", "100", "--out", str(out), "-q"]
    assert prep_main(index) == 1
    one_line(capsys, "prep", out)
    assert not out.exists() and temporaries(tmp_path) == []
    disk.free()
    assert prep_main(index) == 0
    assert out.read_bytes() == (tmp_path / "ref.csv").read_bytes()


def _shard_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".tar", ".parquet")}


def test_make_shards_on_a_full_disk(raw, tmp_path, monkeypatch, capsys):
    tags = tmp_path / "tags.csv"
    assert prep_main(["make-tag-index", "--posts", str(raw), "--out", str(tags), "-q"]) == 0
    flags = ["make-shards", "--posts", str(raw), "--tags", str(tags), "--image-size", "32",
             "--samples-per-shard", "10", "--workers", "0", "-q"]
    assert prep_main([*flags, "--out", str(tmp_path / "ref")]) == 0
    out = tmp_path / "shards"
    capsys.readouterr()
    disk = FullDisk(monkeypatch, name="00001.tar", after=4)    # inside the second shard
    assert prep_main([*flags, "--out", str(out)]) == 1
    one_line(capsys, "prep", "00001.tar")
    assert temporaries(out) == []
    disk.free()
    assert prep_main([*flags, "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["complete"]
    assert _shard_files(out) == _shard_files(tmp_path / "ref")


# -- train and tag --------------------------------------------------------------------------

FAST = ["--arch", "resnet18", "--weights", "none", "--image-size", "16", "--epochs", "1",
        "--batch-size", "8", "--workers", "0", "--max-steps", "2", "--log-every", "0",
        "--checkpoint-every", "0", "--shuffle-buffer", "16", "--no-report", "-q"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return emulator_shards(tmp_path_factory.mktemp("shards"), posts=60, size=16)


@pytest.mark.parametrize("name", ["checkpoints/last.pt", "eval.json"])
def test_train_on_a_full_disk(shards, tmp_path, monkeypatch, capsys, name):
    """The checkpoint (torch.save wraps the error in its own) or the run's last file."""
    out = tmp_path / "run"
    argv = ["--stream", "--shards", str(shards), "--out", str(out), *FAST]
    disk = FullDisk(monkeypatch, name=Path(name).name)
    assert train_main(argv) == 1
    line = one_line(capsys, "train", out / name)
    assert "--resume" in line
    assert temporaries(out) == [] and not (out / name).exists()
    disk.free()
    assert train_main([*argv, "--resume"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["step"] == 2 and (out / "model.safetensors").exists()


@pytest.fixture(scope="module")
def run(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("tagger") / "run"
    assert train_main(["--stream", "--shards", str(shards), "--out", str(out), *FAST]) == 0
    return out


@pytest.fixture
def pics(shards, tmp_path):
    """Eight of the shards' pictures as files, in a folder and a subfolder."""
    import tarfile
    folder = tmp_path / "pics"
    (folder / "sub").mkdir(parents=True)
    with tarfile.open(shards / "train" / "00000.tar") as tar:
        images = [m for m in tar.getmembers() if m.name.endswith(".jpg")][:8]
        for i, member in enumerate(images):
            target = folder / ("sub" if i % 2 else "") / Path(member.name).name
            target.write_bytes(tar.extractfile(member).read())
    return folder


def _tag(run, pics, *extra) -> int:
    return tag_main(["--model", str(run), str(pics), "--workers", "0", "--batch-size", "2",
                     "--threshold", "0", "-q", *map(str, extra)])


def test_tag_output_and_embed_on_a_full_disk(run, pics, tmp_path, monkeypatch, capsys):
    table, vectors = tmp_path / "t.jsonl", tmp_path / "e.parquet"
    disk = FullDisk(monkeypatch, name="t.jsonl", after=3)
    assert _tag(run, pics, "--output", table, "--embed", vectors) == 1
    one_line(capsys, "tag", table)
    assert not table.exists() and not vectors.exists() and temporaries(tmp_path) == []
    disk.free()
    assert _tag(run, pics, "--output", table, "--embed", vectors) == 0
    assert len(table.read_text().splitlines()) == 8
    assert len(pd.read_parquet(vectors)) == 8


def test_tag_embed_footer_on_a_full_disk(run, pics, tmp_path, monkeypatch, capsys):
    """The parquet footer, written when the table closes, is the write that fails."""
    vectors = tmp_path / "e.parquet"
    disk = FullDisk(monkeypatch, name="nothing-is-named-so")
    from train.tag import output
    close = output.EmbeddingTable.close

    def fill_then_close(self):
        disk.full = True
        return close(self)

    monkeypatch.setattr(output.EmbeddingTable, "close", fill_then_close)
    assert _tag(run, pics, "--embed", vectors) == 1
    one_line(capsys, "tag", vectors)
    assert not vectors.exists() and temporaries(tmp_path) == []


def test_tag_captions_on_a_full_disk(run, pics, monkeypatch, capsys):
    disk = FullDisk(monkeypatch, name=".txt", after=3)
    assert _tag(run, pics, "--captions") == 1
    one_line(capsys, "tag", ".txt")
    assert len(list(pics.rglob("*.txt"))) == 3 and temporaries(pics) == []
    disk.free()
    assert _tag(run, pics, "--captions", "--output", pics.parent / "t.jsonl") == 0
    rows = {r["path"]: r["tags"] for r in pd.read_json(pics.parent / "t.jsonl", lines=True)
            .to_dict("records")}
    for image in pics.rglob("*.jpg"):
        assert image.with_suffix(".txt").read_text().strip() == ", ".join(rows[str(image)])


def test_tag_captions_that_fail_make_a_nonzero_exit(run, pics, monkeypatch, capsys):
    FullDisk(monkeypatch, name=".txt", after=2, code=errno.EIO)     # not a full disk
    assert _tag(run, pics, "--captions") == 1
    err = capsys.readouterr().err
    assert err.count("cannot write the caption") == 6          # each failure said, run goes on
    assert len(list(pics.rglob("*.txt"))) == 2
