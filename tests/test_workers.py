"""One rule for `--workers` (cli_kit/workers.py): the default is one per CPU of the process's
affinity (at most 8 for DataLoader processes), and 0 means the main process, in every command
and in the library calls behind it.

The machine is faked at one place, `os.sched_getaffinity`, which is what the rule (and torch's
own DataLoader check) reads; what a command does is seen on the real pools it starts.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

import prep.image_pool
import prep.tag_counts
from prep.cli import build_parser as prep_parser
from prep.cli import main as prep_main
from prep.imaging import ImageSettings
from prep.make_shards import ShardJob, ShardSettings, make_shards
from prep.make_tag_index import TagIndexJob, make_tag_index
from prep.tag_counts import CountSettings
from train.cli import build_parser as train_parser
from train.normalization import Normalization
from train.settings import TrainSettings
from train.tag.cli import build_parser as tag_parser
from train.tag.review.cli import build_parser as review_parser


@pytest.fixture
def cpus(monkeypatch):
    """Make this process see `n` CPUs, as the kernel's affinity mask says."""
    def set_cpus(n: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    return set_cpus


def defaults() -> dict[str, int]:
    """`--workers` of every command that has it, parsed without the flag, and the library's
    own default for the same job."""
    prep, subs = prep_parser()
    return {
        "train": train_parser().parse_args(["--shards", "s", "--out", "o"]).workers,
        "train (library)": TrainSettings(shards="s", out="o").workers,
        "tag": tag_parser().parse_args(["--model", "run", "pics"]).workers,
        "tag review": review_parser().parse_args(["pics", "--model", "run"]).workers,
        "prep make-shards": prep.parse_args(["make-shards", "--folder", "f", "--out",
                                             "o"]).workers,
        "prep make-tag-index": prep.parse_args(["make-tag-index", "--posts", "p", "--out",
                                                "t.csv"]).workers,
    }


@pytest.mark.parametrize(("n", "loaders", "pools"), [(1, 1, 1), (2, 2, 2), (3, 3, 3),
                                                     (12, 8, 12), (64, 8, 64)])
def test_the_default_is_one_per_cpu_of_the_affinity_at_most_8_dataloader_processes(
        cpus, n, loaders, pools):
    cpus(n)
    assert defaults() == {"train": loaders, "train (library)": loaders, "tag": loaders,
                          "tag review": loaders, "prep make-shards": pools,
                          "prep make-tag-index": pools}


def test_auto_is_the_default_and_the_help_says_what_it_is_here(cpus):
    cpus(3)
    assert train_parser().parse_args(["--shards", "s", "--out", "o", "--workers",
                                      "auto"]).workers == 3
    prep, _ = prep_parser()
    assert prep.parse_args(["make-shards", "--folder", "f", "--out", "o", "--workers",
                            "auto"]).workers == 3
    for parser in (train_parser(), tag_parser(), review_parser()):
        text = " ".join(parser.format_help().split())
        assert "0 = in the main process (default: auto = one per CPU, at most 8: 3 here)" \
            in text, parser.prog


def test_training_ranks_on_one_machine_share_its_cpus(cpus, monkeypatch):
    cpus(12)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")                    # torchrun --nproc-per-node 4
    assert TrainSettings(shards="s", out="o").workers == 3
    assert train_parser().parse_args(["--shards", "s", "--out", "o"]).workers == 3


def test_without_an_affinity_call_the_machine_count_is_used(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)    # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    assert defaults()["prep make-shards"] == 5 and defaults()["tag"] == 5


@pytest.mark.parametrize(("value", "says"), [("-1", "must be at least 0, got -1"),
                                           ("many", "expected an integer, got 'many'")])
def test_a_bad_count_is_a_usage_error_naming_the_flag(value, says, capsys):
    from train.cli import main as train_main
    assert prep_main(["make-shards", "--folder", "f", "--out", "o", "--workers", value]) == 2
    assert train_main(["--shards", "s", "--out", "o", "--workers", value]) == 2
    last = [err.strip().splitlines()[-1] for err in capsys.readouterr().err.split("usage:")[1:]]
    assert last == [f"prep make-shards: error: argument --workers: {says}",
                    f"train: error: argument --workers: {says}"]


# -- 0 = in the main process, from the command line and from the library alike --------------

class Pools:
    """Every thread or process pool a job starts, with its size (the real pools, recorded)."""

    def __init__(self, monkeypatch):
        self.started: list[tuple[str, int]] = []
        pools = self

        class Threads(concurrent.futures.ThreadPoolExecutor):
            def __init__(self, max_workers=None, *args, **kwargs):
                pools.started.append(("threads", max_workers))
                super().__init__(max_workers, *args, **kwargs)

        class Processes(concurrent.futures.ProcessPoolExecutor):
            def __init__(self, max_workers=None, *args, **kwargs):
                pools.started.append(("processes", max_workers))
                super().__init__(max_workers, *args, **kwargs)

        monkeypatch.setattr(prep.tag_counts, "ThreadPoolExecutor", Threads)
        monkeypatch.setattr(prep.image_pool, "ProcessPoolExecutor", Processes)

    def take(self) -> list[tuple[str, int]]:
        started, self.started = self.started, []
        return started


def posts_file(tmp_path: Path) -> Path:
    """Three posts in three JSON-lines files (three read units, so a pool has work)."""
    folder = tmp_path / "posts"
    folder.mkdir()
    for i, tags in enumerate([["a", "b"], ["a"], ["b", "c"]]):
        (folder / f"part-{i}.jsonl").write_text(json.dumps({"id": i, "tags": tags}) + "\n")
    return folder


def test_make_tag_index_workers_0_reads_in_this_thread_from_the_cli_and_the_library(
        tmp_path, cpus, monkeypatch):
    cpus(3)
    pools, posts = Pools(monkeypatch), posts_file(tmp_path)
    assert prep_main(["make-tag-index", "--posts", str(posts), "--out",
                      str(tmp_path / "cli.csv"), "--workers", "0", "-q"]) == 0
    assert pools.take() == []
    make_tag_index(TagIndexJob(posts=(posts,), out=tmp_path / "lib.csv",
                               count=CountSettings(workers=0)))
    assert pools.take() == []
    assert (tmp_path / "cli.csv").read_bytes() == (tmp_path / "lib.csv").read_bytes()
    # and by default both start one reader thread per CPU
    assert prep_main(["make-tag-index", "--posts", str(posts), "--out",
                      str(tmp_path / "cli2.csv"), "-q"]) == 0
    make_tag_index(TagIndexJob(posts=(posts,), out=tmp_path / "lib2.csv"))
    started = pools.take()
    assert started and set(started) == {("threads", 3)}


def class_folder(tmp_path: Path) -> Path:
    """Two class folders of two small images each."""
    root = tmp_path / "classes"
    for k, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (24, 20), (40 * k + i, 100, 200)).save(root / name / f"{i}.png")
    return root


def test_make_shards_workers_0_works_in_this_process_from_the_cli_and_the_library(
        tmp_path, cpus, monkeypatch, capsys):
    cpus(3)
    pools, folder = Pools(monkeypatch), class_folder(tmp_path)
    assert prep_main(["make-shards", "--folder", str(folder), "--out", str(tmp_path / "cli"),
                      "--image-size", "16", "--val-fraction", "0", "--workers", "0",
                      "-q"]) == 0
    assert pools.take() == []
    settings = ShardSettings(val_fraction=0.0, image=ImageSettings(size=16))
    make_shards(ShardJob(out=tmp_path / "lib", folder=folder, settings=settings, workers=0))
    assert pools.take() == []
    tar = Path("train") / "00000.tar"
    assert (tmp_path / "cli" / tar).read_bytes() == (tmp_path / "lib" / tar).read_bytes()


def test_tag_library_calls_take_the_default_of_tag_workers(cpus, monkeypatch, tmp_path):
    """`predict` (behind `tag`) and `ensure_predictions` (behind `tag review`) start as many
    DataLoader processes by default as the commands do, and none for 0."""
    import torch
    from torch.utils.data import DataLoader

    import train.tag.inference
    from train.tag.inference import predict
    from train.tag.review.predictions import ensure_predictions

    cpus(3)
    passed = []

    class Recording(DataLoader):
        def __init__(self, *args, num_workers=0, **kwargs):
            passed.append(num_workers)
            super().__init__(*args, num_workers=num_workers, **kwargs)

    monkeypatch.setattr(train.tag.inference, "DataLoader", Recording)
    weights = tmp_path / "run" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"")
    # what the two read of a run before its first image (there is none: no model is needed)
    run = SimpleNamespace(device=torch.device("cpu"), image_size=16, resize="pad",
                          preparation=None, names=["a"], path=weights.parent,
                          normalization=Normalization.from_record(None))
    assert list(predict(run, [])) == [] and list(predict(run, [], workers=0)) == []
    (tmp_path / "pics").mkdir()
    ensure_predictions(tmp_path / "pics", run, limits=None)
    assert passed == [3, 0, 3] == [tag_parser().parse_args(["--model", "r", "p"]).workers, 0,
                                   review_parser().parse_args(["p", "--model", "r"]).workers]
