"""Shared fixtures: a running booru emulator on 127.0.0.1 and a tiny HTTP helper."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

from scrape.emulator import EmulatorThread, FaultConfig

AGENT = "booru-tagger-tests/1.0"


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


def http_get(url: str, headers: dict | None = None) -> Reply:
    """GET without redirects followed automatically raising; returns status, headers, body."""
    req = urllib.request.Request(url, headers={"User-Agent": AGENT, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Reply(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, dict(e.headers), e.read())


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


# Under pytest-xdist every worker is a process of its own; with one torch/OpenMP thread each the
# workers share the cores instead of oversubscribing them (a training test ran 6x slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
