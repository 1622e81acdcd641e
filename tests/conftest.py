"""Shared fixtures: a running booru emulator on 127.0.0.1 (helpers live in tests/support/)."""

from __future__ import annotations

import os

import pytest

from scrape.emulator import EmulatorThread, FaultConfig


@pytest.fixture(scope="session")
def emulator():
    """One emulator for the session: 600 posts, small images. Faults reset after each test."""
    with EmulatorThread(seed=7, posts=600, image_scale=0.15) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _reset_faults(request):
    yield
    if "emulator" in request.fixturenames:
        emu = request.getfixturevalue("emulator")
        emu.emulator.faults.__dict__.update(FaultConfig().__dict__)
        emu.emulator.gelbooru_auth = "off"
        emu.emulator.log.attempts.clear()


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread while a module trains, also outside xdist (below); a module asks
    for it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Under pytest-xdist every worker is a process of its own; with one torch/OpenMP thread each the
# workers share the cores instead of oversubscribing them (a training test ran 6x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
