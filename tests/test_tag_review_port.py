"""`tag review --port` on a port already taken fails at once, before any image is predicted."""

from __future__ import annotations

import socket

import pytest
import torch
from PIL import Image
from support.train_fixtures import emulator_shards

from train.cli import main as train_main
from train.tag.cli import main as tag_main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("review-port")
    shards = emulator_shards(root / "shards", posts=40, size=16)
    assert train_main(["--stream", "--shards", str(shards), "--out", str(root / "run"),
                       "--arch", "resnet18", "--weights", "none", "--image-size", "16",
                       "--epochs", "1", "--batch-size", "8", "--workers", "0", "--max-steps",
                       "1", "--no-report", "-q"]) == 0
    torch.set_num_threads(threads)
    return root / "run"


def test_a_port_in_use_fails_before_predicting(run, tmp_path, capsys):
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (40 * i, 90, 200)).save(pics / f"{i}.png")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code = tag_main(["review", str(pics), "--model", str(run), "--port", str(port),
                         "--workers", "0"])
    err = capsys.readouterr().err
    assert not (pics / ".review").exists()                      # nothing predicted
    assert not list(pics.glob("*.txt"))                         # no caption written
    assert code == 2 and err.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
