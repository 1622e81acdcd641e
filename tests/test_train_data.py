"""The training stream: every sample once per epoch in every layout, equal streams, resume."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from support.train_fixtures import write_shards
from torch.utils.data import DataLoader

from shards.errors import ManifestError
from shards.manifest import Split, read_manifest, split_of
from train.data import (
    ShardStream,
    Targets,
    encoded_collate,
    transforms,
)

LAYOUTS = {"one shard": [60], "fewer shards than streams": [25, 21],
           "unequal shards": [35, 5, 18, 13], "partial last shard": [16, 16, 16, 7],
           "many equal shards": [8] * 8}
BATCH = 4


def _jpeg(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), value % 256, np.uint8)).save(out, "JPEG")
    return out.getvalue()


def _shards(root, sizes: list[int], broken: set[int] = frozenset()):
    rows, i = {"train": [], "val": []}, 0
    for size in sizes:
        for _ in range(size):
            data = b"not a jpeg at all" if i in broken else _jpeg(i)
            rows["train"].append((f"{i:09d}", data, {"tags": ["a" if i % 2 else "b"]}))
            i += 1
    rows["val"] = rows["train"][:4]
    written = {"train": [], "val": rows["val"]}
    # write_shards cuts equal shards; write each size as its own shard, in order
    root = write_shards(root, {"train": rows["train"][:sizes[0]], "val": rows["val"]},
                        [("a", 0), ("b", 0)], per_shard=max(sizes))
    del written
    return root, rows["train"]


def _split(tmp_path, sizes, broken=frozenset()):
    """A Split over one tar per entry of `sizes` (unequal shards need one write per shard)."""
    import json

    import webdataset as wds
    root = tmp_path / "s"
    (root / "train").mkdir(parents=True)
    keys, i, urls = [], 0, []
    for n, size in enumerate(sizes):
        url = str(root / "train" / f"{n:05d}.tar")
        with wds.TarWriter(url) as tw:
            for _ in range(size):
                data = b"not a jpeg at all" if i in broken else _jpeg(i)
                tw.write({"__key__": f"{i:09d}", "jpg": data,
                          "json": json.dumps({"tags": ["a" if i % 2 else "b"],
                                              "label_ids": [i % 2 ^ 1]}).encode()})
                keys.append(f"{i:09d}")
                i += 1
        urls.append(url)
    return Split(urls, sum(sizes), list(sizes)), keys


def _stream(split, **kw) -> ShardStream:
    return ShardStream(split, Targets(["a", "b"], "multilabel"), None, seed=3,
                       shuffle_buffer=20, open_shards=2, batch_size=BATCH, **kw)


def _batches(ds: ShardStream, workers: int, **kw) -> list[list[str]]:
    """The key batches a real DataLoader with `workers` workers (0: in this process) gives,
    in the order it gives them, as `Run` makes it (whole batches only)."""
    loader = DataLoader(ds, batch_size=BATCH, num_workers=workers, drop_last=True,
                        collate_fn=encoded_collate, **kw)
    return [keys for _, _, keys in loader]


def _epoch(split, epoch: int, ranks: int, workers: int) -> list[list[list[str]]]:
    """Each rank's batches of one epoch, each rank reading through its own DataLoader."""
    out = []
    for rank in range(ranks):
        ds = _stream(split, rank=rank, world=ranks)
        ds.set_epoch(epoch)
        out.append(_batches(ds, workers))
    return out


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_sample_once_per_epoch_in_every_layout(tmp_path, layout):
    sizes = LAYOUTS[layout]
    split, keys = _split(tmp_path, sizes)
    total = sum(sizes)
    for ranks in (1, 2):
        for workers in (0, 1, 2):
            streams = ranks * max(1, workers)
            # Planned: every stream the same whole number of batches, enough for them all to
            # hold every sample; the remainder of the last batches is padding.
            per_stream = BATCH * -(-total // (streams * BATCH))
            padding = streams * per_stream - total
            orders = []
            for epoch in (0, 1):
                per_rank = _epoch(split, epoch, ranks, workers)
                where = (layout, ranks, workers, epoch)
                assert [len(b) for b in per_rank] == [streams // ranks * per_stream // BATCH] \
                    * ranks, where
                seen = Counter(k for batches in per_rank for b in batches for k in b)
                assert set(seen) == set(keys), where
                assert sum(seen.values()) == total + padding, where
                assert sum(n - 1 for n in seen.values()) == padding, where
                assert max(seen.values()) <= 1 + -(-padding // total), where
                orders.append([k for batches in per_rank for b in batches for k in b])
            assert orders[0] != orders[1]


def test_a_brace_pattern_without_a_manifest_reads_every_sample_every_epoch(tmp_path):
    from shards.manifest import pattern_manifest
    _, keys = _split(tmp_path, [40, 40, 40, 13])             # plain tars: no stats, no manifest
    pattern = f"{tmp_path}/s/train/{{00000..00003}}.tar"
    split = split_of(pattern, pattern_manifest(pattern, samples=133), "train")
    for epoch in (0, 1):
        for ranks, workers in ((1, 2), (2, 0)):
            per_rank = _epoch(split, epoch, ranks, workers)
            seen = Counter(k for batches in per_rank for b in batches for k in b)
            assert set(seen) == set(keys), (epoch, ranks, workers, 133 - len(seen))


def test_resume_skips_exactly_the_batches_trained(tmp_path):
    split, _ = _split(tmp_path, [70, 9, 35, 26])
    ds = _stream(split)
    ds.set_epoch(1)
    whole = _batches(ds, 3)
    for trained in (4, 5):
        ds.set_epoch(1, skip_batches=trained)
        assert _batches(ds, 3) == whole[trained:], trained


def _rank_reads(rank: int, init: str, split: Split, out: str) -> None:
    """One rank of a real two-rank gloo group: its keys through two forkserver workers."""
    import json
    import multiprocessing

    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2)
    try:
        ds = _stream(split)                   # rank and world from the group
        ds.set_epoch(0)
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload(["train.data"])   # torch imported once, not per worker
        batches = _batches(ds, 2, multiprocessing_context=forkserver)
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(batches, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.heavy
def test_ranks_reach_forkserver_workers(tmp_path):
    """Workers started by forkserver (Python 3.14's default) have no process group: each
    rank must still read only its share, not the whole epoch."""
    import json

    import torch.multiprocessing as mp
    split, keys = _split(tmp_path, [40, 40, 40, 13])
    # The ranks are forked (cheap: torch is imported already); their workers are not.
    mp.start_processes(_rank_reads, args=(str(tmp_path / "init"), split, str(tmp_path)),
                       nprocs=2, start_method="fork")
    per_rank = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    per_stream = BATCH * -(-133 // (4 * BATCH))             # 2 ranks x 2 workers: 36 each
    assert [len(b) for b in per_rank] == [2 * per_stream // BATCH] * 2       # 18, not 34
    seen = Counter(k for batches in per_rank for b in batches for k in b)
    assert set(seen) == set(keys) and sum(seen.values()) == 4 * per_stream


def test_unreadable_samples_are_replaced_so_streams_stay_equal(tmp_path):
    split, keys = _split(tmp_path, [40, 30], broken={3, 4, 50, 69})
    ds = ShardStream(split, Targets(["a", "b"], "multilabel"), transforms(16, True),
                     seed=0, shuffle_buffer=10, batch_size=BATCH)
    ds.set_epoch(0)
    lengths = [sum(1 for _ in ds.stream(r, 2, w, 2)) for r in range(2) for w in range(2)]
    assert lengths == [ds.per_stream(2, 2)] * 4
    assert int(ds.errors.sum()) >= 4            # padding may read one twice


def test_a_shard_shorter_than_its_manifest_is_padded_and_counted(tmp_path):
    split, keys = _split(tmp_path, [40, 30])
    split = Split(split.urls, 80, [40, 40])         # the manifest claims 10 more
    ds = _stream(split)
    ds.set_epoch(0)
    batches = _batches(ds, 2)
    assert sum(len(b) for b in batches) == 2 * BATCH * -(-80 // (2 * BATCH))
    assert set(k for b in batches for k in b) == set(keys)
    assert int(ds.errors.sum()) >= 1            # counted in the workers, seen here


def test_augmentation_leaves_the_global_rng_alone(tmp_path):
    split, _ = _split(tmp_path, [20])
    ds = ShardStream(split, Targets(["a", "b"], "multilabel"), transforms(16, True),
                     batch_size=4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    list(ds.stream(0, 1, 0, 1))
    assert torch.equal(torch.rand(3), expected)


def test_an_unfinished_build_is_refused_unless_allowed(tmp_path):
    import json
    root, _ = _shards(tmp_path / "s", [20])
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["complete"] = False
    manifest["splits"]["train"]["shards"][0].pop("successes")
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="make-shards.*--allow-incomplete"):
        read_manifest(str(root), allow_incomplete=False)
    allowed = read_manifest(str(root), allow_incomplete=True)
    assert split_of(str(root), allowed, "val").samples == 4
    with pytest.raises(ManifestError):
        read_manifest(str(tmp_path / "nowhere"))
