"""make-shards' image pool: ordered results whatever the workers, and a dying worker costs
only the image that kills it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from prep.image_pool import ImagePool
from prep.imaging import ImageSettings


def echo_or_die(item, settings):
    """Stand-in for process_item: dies on 'die', otherwise reports the pid and the item.

    An item with a path is a meeting point: its worker leaves its pid in that folder and
    waits until two workers have (so both must be working at once, whatever the timing)."""
    path, shown = item
    if shown == "die":
        os._exit(3)
    if path is not None:
        folder = Path(path)
        (folder / str(os.getpid())).touch()
        deadline = time.monotonic() + 60  # a guard for a broken pool, not a race
        while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    return ("success", f"{shown}:{os.getpid()}", None)


def test_results_keep_the_input_order(tmp_path):
    items = [(str(tmp_path) if i % 3 == 0 else None, f"item{i}") for i in range(50)]
    with ImagePool(ImageSettings(), workers=2, batch=3, process=echo_or_die) as pool:
        results = list(pool.map(items))
    assert [r[1].split(":")[0] for r in results] == [f"item{i}" for i in range(50)]
    assert len({r[1].split(":")[1] for r in results}) == 2  # both workers did some
    assert len(list(tmp_path.iterdir())) == 2


def test_a_worker_that_dies_costs_only_its_image():
    items = [(None, f"item{i}") for i in range(20)]
    items[7] = (None, "die")
    with ImagePool(ImageSettings(), workers=2, batch=4, process=echo_or_die) as pool:
        results = list(pool.map(items))
    assert len(results) == 20
    assert results[7][0] == "failed_worker_died" and "died" in results[7][1]
    assert [r[1].split(":")[0] for i, r in enumerate(results) if i != 7] == [
        f"item{i}" for i in range(20) if i != 7]
    assert all(r[0] == "success" for i, r in enumerate(results) if i != 7)


def test_a_worker_that_dies_while_the_next_batch_waits_costs_only_its_image(tmp_path):
    """The pool breaks between two results: the next submission meets a broken pool, and the
    batches still come back in order. The input waits (in this process) until the pool has
    broken before it hands out the batch after the first result, so the order is exact."""
    pool = ImagePool(ImageSettings(), workers=2, batch=4, process=echo_or_die)

    def items():
        for i in range(16):
            yield (None, "die") if i == 5 else (None, f"item{i}")
        deadline = time.monotonic() + 60  # a guard, not a race: the death is certain
        while not getattr(pool._executor, "_broken", False) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield from ((None, f"item{i}") for i in range(16, 20))

    with pool:
        results = list(pool.map(items()))
    assert [r[0] for r in results].count("failed_worker_died") == 1
    assert results[5][0] == "failed_worker_died"
    assert [r[1].split(":")[0] for i, r in enumerate(results) if i != 5] == [
        f"item{i}" for i in range(20) if i != 5]


def test_in_process_when_one_worker():
    with ImagePool(ImageSettings(), workers=1, process=echo_or_die) as pool:
        results = list(pool.map([(None, "a"), (None, "b")]))
    assert [r[1] for r in results] == [f"a:{os.getpid()}", f"b:{os.getpid()}"]
