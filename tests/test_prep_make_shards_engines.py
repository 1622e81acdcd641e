"""The engines of make-shards are peers: each receives the one per-shard function
(prep.make_shards.shard.build_shard), so where and in which order a shard is built never
changes its bytes. Checked without Ray: an engine that builds each shard alone, processing its
images in the task as a Ray task does, and one whose shards all fail (the driver then builds
them with the local engine, as after Ray tasks that failed their retries)."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from PIL import Image
from support.shard_builds import TINY, make_shards, snapshot, write_images

from prep.cli import main
from prep.make_shards import build as driver

ARGS = ["--samples-per-shard", "3", "--val-fraction", "0.3", "--dedupe", "near"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of noisy pictures, one of them twice (PNG and JPEG: a near-duplicate)."""
    root = tmp_path_factory.mktemp("engines") / "in"
    paths = write_images(root / "cats", 5) + write_images(root / "dogs", 4, seed=1)
    Image.open(paths[0]).save(root / "cats" / "again.jpg", quality=95)
    return root


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
    """The local engine's build, with the default engine table."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(["make-shards", *TINY, "--folder", str(folder), "--out", str(out), *ARGS]) == 0
    return out


def test_the_reference_has_a_near_duplicate_and_several_shards(reference):
    rows = list(reference.rglob("*.parquet"))
    assert len(rows) >= 4 and {p.parent.name for p in rows} == {"train", "val"}
    statuses = [s for p in rows for s in pq.read_table(p)["status"].to_pylist()]
    assert "skipped_near_duplicate" in statuses and statuses.count("success") >= 9


def test_a_shard_built_alone_in_its_task_has_the_local_engines_bytes(folder, reference,
                                                                    tmp_path, capsys,
                                                                    monkeypatch):
    built = []

    def one_task_per_shard(pending, build, builder, options):
        for spec in reversed(pending):  # any order: each shard processes its own images
            build(spec, builder, None, wait_upload=True)
            built.append(f"{spec.split}/{spec.name}")
        return []

    monkeypatch.setitem(driver.ENGINE_OF, "local", one_task_per_shard)
    out = tmp_path / "out"
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(out), *ARGS)
    assert code == 0, err
    assert len(built) == len(snapshot(reference)) // 2
    assert snapshot(out) == snapshot(reference)
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()


def test_shards_an_engine_could_not_build_are_built_by_the_local_engine(folder, reference,
                                                                       tmp_path, capsys,
                                                                       monkeypatch):
    asked = []

    def all_fail(pending, build, builder, options):
        asked.extend(pending)
        return list(pending)

    monkeypatch.setitem(driver.ENGINE_OF, "ray", all_fail)
    out = tmp_path / "out"
    code, err = make_shards(capsys, "--folder", str(folder), "--out", str(out), "--engine",
                            "ray", *ARGS)
    assert code == 0, err
    assert len(asked) == len(snapshot(reference)) // 2
    assert snapshot(out) == snapshot(reference)
