"""make-shards' image pool: ordered results whatever the workers, and a dying worker costs
only the image that kills it."""

from __future__ import annotations

import os
import time

from prep.image_pool import ImagePool
from prep.imaging import ImageSettings


def echo_or_die(item, settings):
    """Stand-in for process_item: dies on 'die', otherwise reports the pid and the item."""
    path, shown = item
    if shown == "die":
        os._exit(3)
    time.sleep(0.01)
    return ("success", f"{shown}:{os.getpid()}", None)


def test_results_keep_the_input_order():
    items = [(None, f"item{i}") for i in range(50)]
    with ImagePool(ImageSettings(), workers=2, batch=3, process=echo_or_die) as pool:
        results = list(pool.map(items))
    assert [r[1].split(":")[0] for r in results] == [f"item{i}" for i in range(50)]
    assert len({r[1].split(":")[1] for r in results}) == 2  # both workers did some


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


def test_in_process_when_one_worker():
    with ImagePool(ImageSettings(), workers=1, process=echo_or_die) as pool:
        results = list(pool.map([(None, "a"), (None, "b")]))
    assert [r[1] for r in results] == [f"a:{os.getpid()}", f"b:{os.getpid()}"]
