"""The training stream: every sample once per epoch in every layout, equal streams, resume."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from train_fixtures import write_shards

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
                          "json": json.dumps({"tags": ["a" if i % 2 else "b"]}).encode()})
                keys.append(f"{i:09d}")
                i += 1
        urls.append(url)
    return Split(urls, sum(sizes), list(sizes)), keys


def _stream(split, **kw) -> ShardStream:
    return ShardStream(split, Targets(["a", "b"], "multilabel"), None, seed=3,
                       shuffle_buffer=20, open_shards=2, batch_size=BATCH, **kw)


def _epoch(ds: ShardStream, epoch: int, ranks: int, workers: int) -> list[list[str]]:
    ds.set_epoch(epoch)
    return [[key for _, _, key in ds.stream(rank, ranks, worker, workers)]
            for rank in range(ranks) for worker in range(workers)]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_sample_once_per_epoch_in_every_layout(tmp_path, layout):
    split, keys = _split(tmp_path, LAYOUTS[layout])
    ds = _stream(split)
    for ranks in (1, 2):
        for workers in (1, 2, 3, 4):         # 0 workers read as one stream, as 1 does
            streams = ranks * workers
            orders = []
            for epoch in (0, 1):
                per_stream = _epoch(ds, epoch, ranks, workers)
                lengths = {len(s) for s in per_stream}
                assert lengths == {ds.per_stream(workers, ranks)}, (ranks, workers)
                assert lengths.pop() % BATCH == 0
                seen = Counter(k for s in per_stream for k in s)
                assert set(seen) == set(keys), (layout, ranks, workers, epoch)
                padding = sum(seen.values()) - len(keys)
                assert 0 <= padding < streams * BATCH
                orders.append([k for s in per_stream for k in s])
            assert orders[0] != orders[1]


def test_the_stream_through_dataloader_workers(tmp_path):
    split, keys = _split(tmp_path, [50, 41])
    ds = _stream(split)
    ds.set_epoch(0)
    loader = DataLoader(ds, batch_size=BATCH, num_workers=2, drop_last=True,
                        collate_fn=encoded_collate)
    seen = Counter(k for _, _, batch in loader for k in batch)
    assert set(seen) == set(keys) and sum(seen.values()) == 2 * ds.per_stream(2, 1)


def test_resume_skips_exactly_the_batches_trained(tmp_path):
    split, _ = _split(tmp_path, [70, 9, 35, 26])
    ds = _stream(split)
    ds.set_epoch(1)
    whole = [[k for _, _, k in ds.stream(0, 1, w, 3)] for w in range(3)]
    batches = [whole[w][i:i + BATCH] for i in range(0, len(whole[0]), BATCH) for w in range(3)]
    ds.set_epoch(1, skip_batches=4)
    rest = [[k for _, _, k in ds.stream(0, 1, w, 3)] for w in range(3)]
    resumed = [rest[w][i:i + BATCH] for i in range(0, len(whole[0]), BATCH) for w in range(3)]
    assert [b for b in resumed if b] == batches[4:]


def test_unreadable_samples_are_replaced_so_streams_stay_equal(tmp_path):
    split, keys = _split(tmp_path, [40, 30], broken={3, 4, 50, 69})
    ds = ShardStream(split, Targets(["a", "b"], "multilabel"), transforms(16, True),
                     seed=0, shuffle_buffer=10, batch_size=BATCH)
    ds.set_epoch(0)
    lengths = [sum(1 for _ in ds.stream(r, 2, w, 2)) for r in range(2) for w in range(2)]
    assert lengths == [ds.per_stream(2, 2)] * 4
    assert int(ds.errors.sum()) >= 4            # padding may read one twice


def test_a_shard_shorter_than_its_manifest_is_padded_and_counted(tmp_path):
    split, _ = _split(tmp_path, [40, 30])
    split = Split(split.urls, 80, [40, 40])         # the manifest claims 10 more
    ds = _stream(split)
    ds.set_epoch(0)
    assert sum(len(s) for s in _epoch(ds, 0, 1, 2)) == 2 * ds.per_stream(2, 1)
    assert int(ds.errors.sum()) >= 1


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
