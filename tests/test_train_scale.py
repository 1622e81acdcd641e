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
from train_fixtures import emulator_shards

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


def test_two_ranks_see_disjoint_samples_and_take_the_same_steps(shards, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "train",
           "--stream", "--shards", str(shards), "--out", str(run), "--model", "resnet18",
           "--weights", "none", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
           "--workers", "0", "--shuffle-buffer", "50", "-q"]
    env = {**os.environ, "BOORU_TAGGER_TRACE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    steps0, keys0 = _steps_and_keys(run / "samples-rank0.txt")
    steps1, keys1 = _steps_and_keys(run / "samples-rank1.txt")
    assert steps0 == steps1 > 0
    assert keys0 and keys1 and not keys0 & keys1
    saved = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert saved["world"] == 2 and saved["step"] == steps0 + 1     # trace lines: steps before
    config = json.loads((run / "config.json").read_text())
    assert config["world_size"] == 2
    # The checkpoint of two ranks resumes in one process, for a second epoch.
    report = Run(TrainSettings(shards=str(shards), out=str(run), epochs=2, resume=True,
                               **BASE)).fit()
    assert report["step"] > saved["step"] and report["epoch"] == 2


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
def http_shards(shards):
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
    report = Run(TrainSettings(shards=pattern, out=str(tmp_path / "run"), epochs=1,
                               tags=f"{http_shards}/tags.csv",
                               epoch_samples=samples["successes"], **BASE)).fit()
    assert report["step"] == samples["successes"] // 16
    with pytest.raises(Exception, match="needs --tags"):
        Run(TrainSettings(shards=pattern, out=str(tmp_path / "r2"), **BASE)).fit()
