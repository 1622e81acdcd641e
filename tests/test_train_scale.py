"""Scale-out: two ranks under torchrun (gloo on CPU), and shards read over HTTP."""

from __future__ import annotations

import functools
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch
from support.train_fixtures import corrupt_images, emulator_shards

from shards.manifest import read_manifest
from train.run import Run
from train.settings import TrainSettings

BASE = dict(model="resnet18", weights="none", image_size=32, batch_size=16, workers=0,
            log_every=0, shuffle_buffer=50, checkpoint_every=0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return emulator_shards(tmp_path_factory.mktemp("shards"), posts=260, size=32, per_shard=40)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _steps_and_keys(path: Path) -> tuple[int, set[str]]:
    lines = [line.split() for line in path.read_text().splitlines()]
    return max(int(step) for step, _ in lines), {key for _, key in lines}


def _one_val_shard_and_a_corrupt_sample(shards: Path, into: Path) -> Path:
    """A copy of `shards` with a single validation shard (fewer than the ranks) and one
    undecodable training image (its rank would take a batch fewer if it were dropped)."""
    import shutil
    shutil.copytree(shards, into)
    manifest = json.loads((into / "manifest.json").read_text())
    val = manifest["splits"]["val"]
    val["shards"] = val["shards"][:1]
    val["successes"] = val["shards"][0]["successes"]
    (into / "manifest.json").write_text(json.dumps(manifest))
    bad, = corrupt_images(into / "train" / "00000.tar", (2, 3))
    return into, bad


def _val_loss_in_one_process(shards: Path, run: Path) -> float:
    from safetensors.torch import load_file

    from shards.manifest import split_of
    from train.data import ShardStream, Targets, transforms
    from train.loop import predict_split
    from train.losses import make_loss
    from train.models import build_model
    names = [line.split(",")[1] for line in (run / "tags.csv").read_text().splitlines()[1:]]
    model = build_model("resnet18", len(names), weights="none")
    model.load_state_dict(load_file(str(run / "model.safetensors")))
    split = split_of(str(shards), read_manifest(str(shards)), "val")
    stream = ShardStream(split, Targets(names, "multilabel"), transforms(32, False),
                         shuffle=False, exact=False)
    _, _, loss_sum, n = predict_split(model, torch.utils.data.DataLoader(stream, batch_size=16),
                                      make_loss("multilabel", "bce"), torch.device("cpu"),
                                      task="multilabel")
    return loss_sum / n


@pytest.mark.heavy
def test_two_ranks_see_every_sample_take_the_same_steps_and_weigh_val_loss(shards, tmp_path):
    shards, bad = _one_val_shard_and_a_corrupt_sample(shards, tmp_path / "shards")
    run = tmp_path / "run"
    args = ["--stream", "--shards", str(shards), "--arch", "resnet18", "--weights", "none",
            "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--workers", "0",
            "--shuffle-buffer", "50", "--keep", "last", "-q"]
    env = {**os.environ, "BOORU_TAGGER_TRACE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(_two_ranks("-m", "train", *args, "--out", str(run)),
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, _shown(result)
    steps0, keys0 = _steps_and_keys(run / "samples-rank0.txt")
    steps1, keys1 = _steps_and_keys(run / "samples-rank1.txt")
    assert steps0 == steps1 > 0
    manifest = json.loads((shards / "manifest.json").read_text())["splits"]
    assert keys0 | keys1 == _keys_of(shards / "train") - {bad}   # every other one, once
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["world"] == 2 and saved["step"] == steps0 + 1     # trace lines: steps before
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2
    report = json.loads((run / "eval.json").read_text())
    assert report["samples"] == manifest["val"]["successes"]
    assert report["val_loss"] == pytest.approx(_val_loss_in_one_process(shards, run), rel=1e-4)
    _ranks_without_a_shared_out_fail_at_start(args, env, run, tmp_path)
    # The checkpoint of two ranks resumes in one process, for a second epoch.
    report = Run(TrainSettings(shards=str(shards), out=str(run), epochs=2, resume=True,
                               **BASE)).fit()
    assert report["step"] > saved["step"] and report["epoch"] == 2


def _shown(result: subprocess.CompletedProcess) -> str:
    """Both ends of a failed launch's stderr: the first rank's traceback and torchrun's end."""
    err = result.stderr
    return err if len(err) <= 6000 else f"{err[:3000]}\n[...]\n{err[-3000:]}"


def _two_ranks(*command: str) -> list[str]:
    """`command` (a script or -m module, then its arguments) on two ranks under torchrun."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), *command]


def _ranks_without_a_shared_out_fail_at_start(args: list[str], env: dict, run: Path,
                                              tmp_path: Path) -> None:
    """Two "nodes", each with its own --out: only rank 0's holds the checkpoint. Resuming must
    fail on both ranks with the shared-filesystem message, not train apart or hang."""
    import shutil
    shutil.copytree(run, tmp_path / "node-0")
    (tmp_path / "node-1").mkdir()
    wrapper = tmp_path / "per_rank_out.py"
    wrapper.write_text("import os, sys\nfrom train.entry import train_main\n"
                       "sys.exit(train_main([a.replace('{rank}', os.environ['RANK']) "
                       "for a in sys.argv[1:]]))\n")
    result = subprocess.run(_two_ranks(str(wrapper), *args, "--out", str(tmp_path / "node-{rank}"),
                                       "--resume", "--epochs", "2"),
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode != 0
    assert result.stderr.count("--out must be on a filesystem shared by every node") == 2
    assert "[None, " in result.stderr or ", None]" in result.stderr  # rank 1 found none
    assert not (tmp_path / "node-1" / "checkpoints").exists()


def _keys_of(folder: Path) -> set[str]:
    import tarfile
    keys = set()
    for path in folder.glob("*.tar"):
        with tarfile.open(path) as tar:
            keys |= {m.name.split(".")[0] for m in tar.getmembers()}
    return keys


class FlakyShards(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; the first request of every .tar answers 503 (a transient failure)."""

    seen: Counter = Counter()

    def do_GET(self):
        FlakyShards.seen[self.path] += 1
        if self.path.endswith(".tar") and FlakyShards.seen[self.path] == 1:
            self.send_error(503, "try again")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_shards(shards, monkeypatch):
    """The shards over HTTP, each tar failing once; retried at once (no backoff to wait)."""
    from shards import streams
    monkeypatch.setattr(streams, "BACKOFF_S", 0.0)
    FlakyShards.seen.clear()
    handler = functools.partial(FlakyShards, directory=str(shards))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_shards_stream_over_http_with_a_transient_failure(http_shards, tmp_path):
    report = Run(TrainSettings(shards=http_shards, out=str(tmp_path / "run"), epochs=1,
                               **BASE)).fit()
    assert report["step"] > 0 and report["skipped_samples"] == 0 and "mAP" in report
    tars = {p: n for p, n in FlakyShards.seen.items() if p.endswith(".tar")}
    assert tars and all(n >= 2 for n in tars.values())      # failed once, then read


def test_a_brace_pattern_of_shard_urls(http_shards, shards, tmp_path):
    n = len(list((shards / "train").glob("*.tar")))
    pattern = f"{http_shards}/train/{{00000..{n - 1:05d}}}.tar"
    samples = read_manifest(shards)["splits"]["train"]
    sizes = [s["successes"] for s in samples["shards"]]
    assert len(set(sizes)) > 1                  # unequal shards: 40, ..., and a shorter last
    report = Run(TrainSettings(shards=pattern, out=str(tmp_path / "run"), epochs=1,
                               tags=f"{http_shards}/tags.csv", extra={"trace": True},
                               epoch_samples=samples["successes"], **BASE)).fit()
    steps = -(-samples["successes"] // 16)
    assert report["step"] == steps
    trace = (tmp_path / "run" / "samples-rank0.txt").read_text().splitlines()
    trained = [line.split()[1] for line in trace]         # every sample, padded to batches
    assert set(trained) == _keys_of(shards / "train") and len(trained) == 16 * steps
    with pytest.raises(Exception, match="needs --tags"):
        Run(TrainSettings(shards=pattern, out=str(tmp_path / "r2"), **BASE)).fit()


@pytest.mark.heavy
def test_two_ranks_resumed_at_the_leftover_step_and_mid_epoch_equal_the_whole_run(tmp_path):
    # --keep best, EMA and 3 micro-batches a step at 2 ranks (4 batches of 16 per rank and
    # epoch: steps after micro-batches 3 and 4, the leftover): a fault right after the
    # checkpoint of the epoch's leftover step (2), then --max-steps mid-epoch (3), then
    # resumed to the end, the run ends as the uninterrupted one: weights bit for bit, kept
    # model and step, metrics rows
    import csv

    from safetensors.torch import load_file
    shards = emulator_shards(tmp_path / "shards", posts=130, size=16)
    args = ["--stream", "--shards", str(shards), "--arch", "mobilenet_v3_small", "--weights",
            "none", "--image-size", "16", "--epochs", "3", "--batch-size", "16", "--workers",
            "0", "--shuffle-buffer", "100", "--lr", "0.01", "--grad-accum", "3", "--ema",
            "0.8", "--keep", "best", "--eval-every", "2", "--checkpoint-every", "1", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    crash = tmp_path / "crash_after_step.py"        # both ranks stop after the step's hook
    crash.write_text(
        "import sys\nimport train.run\nfrom train.entry import train_main\n"
        "class Crashing(train.run.Run):\n"
        "    def _on_step(self):\n"
        "        stop = super()._on_step()\n"
        "        if self.state.step == 2:\n"
        "            raise SystemExit(3)\n"
        "        return stop\n"
        "train.run.Run = Crashing\nsys.exit(train_main(sys.argv[1:]))\n")
    for out, command, code in (("whole", ["-m", "train"], 0), ("cut", [str(crash)], 3),
                               ("cut", ["-m", "train", "--resume", "--max-steps", "3"], 0),
                               ("cut", ["-m", "train", "--resume"], 0)):
        result = subprocess.run(_two_ranks(*command, *args, "--out", str(tmp_path / out)),
                                capture_output=True, text=True, timeout=600, env=env)
        assert (result.returncode == 0) == (code == 0), _shown(result)
        if code:
            saved = torch.load(tmp_path / out / "checkpoints" / "last.pt", weights_only=True)
            assert (saved["step"], saved["epoch"], saved["batches_in_epoch"]) == (2, 0, 4)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert json.loads((whole / "config.json").read_text())["total_steps"] == 6
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    last_a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)
    last_b = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    assert (last_b["step"], last_b["images"]) == (last_a["step"], last_a["images"]) == (6, 192)
    for part in ("model", "ema"):
        assert all(torch.equal(v, last_b[part][k]) for k, v in last_a[part].items()), part
    report_a = json.loads((whole / "eval.json").read_text())
    report_b = json.loads((cut / "eval.json").read_text())
    assert {k: report_b[k] for k in ("kept", "kept_step", "mAP")} == \
        {k: report_a[k] for k in ("kept", "kept_step", "mAP")}

    def rows(run):
        with (run / "metrics.csv").open(newline="") as f:
            return [{k: v for k, v in r.items() if k not in {"images_per_s", "data_wait"}}
                    for r in csv.DictReader(f)]
    assert [r["step"] for r in rows(whole)] == ["2", "4", "6"] and rows(cut) == rows(whole)


@pytest.mark.heavy
def test_two_ranks_extend_a_wd_tagger_with_the_one_rank_teacher(tmp_path):
    """--init-from a WD v3 folder at two ranks: rank 0 scores every training sample with the
    starting model once (the same cache a one-rank run writes), both ranks train on it, and
    the forgetting measure reaches eval.json."""
    import numpy as np
    pytest.importorskip("timm")
    from support.wd_fixtures import FOLDERS, SIDE, write_wd_folder

    from train.cli import main as train_main
    shards = emulator_shards(tmp_path / "shards", posts=60, size=SIDE)
    architecture, model_args = FOLDERS["convnext"]
    folder = write_wd_folder(tmp_path / "wd", architecture, model_args, seed=2)
    args = ["--stream", "--shards", str(shards), "--init-from", str(folder), "--epochs", "1",
            "--batch-size", "8", "--workers", "0", "--shuffle-buffer", "50", "--max-steps", "2",
            "--checkpoint-every", "0", "--no-report", "--device", "cpu", "-q"]
    result = subprocess.run(_two_ranks("-m", "train", *args, "--out", str(tmp_path / "two")),
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, _shown(result)
    assert train_main([*args, "--out", str(tmp_path / "one")]) == 0
    with np.load(tmp_path / "two" / "teacher.npz") as two, \
            np.load(tmp_path / "one" / "teacher.npz") as one:
        assert np.array_equal(two["keys"], one["keys"])
        assert np.array_equal(two["columns"], one["columns"]) and len(one["columns"]) > 0
        np.testing.assert_allclose(two["scores"].astype(np.float32),
                                   one["scores"].astype(np.float32), atol=2e-3, rtol=0)
        trained = read_manifest(shards)["splits"]["train"]["successes"]
        assert len(two["keys"]) == trained                  # every sample, not one rank's half
    two, one = (json.loads((tmp_path / run / "eval.json").read_text()) for run in ("two", "one"))
    assert two["world_size"] == 2 and two["retention"]["old_tags"] > 0
    # the starting model's old-tag mAP on the validation split, gathered from both ranks
    assert two["retention"]["map_before"] == pytest.approx(one["retention"]["map_before"],
                                                           abs=1e-4)
