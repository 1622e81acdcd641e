"""The streaming data path: shards -> workers -> shuffled, decoded, augmented batches.

    manifest ─▶ the epoch's sample sequence: shards in a per-epoch order, rotated by a
                per-epoch offset, as (shard, first, last) sample ranges
             ─▶ cut into one contiguous run per (rank, worker) stream
             ─▶ each stream interleaves `open_shards` ranges (webdataset's tar stages)
             ─▶ bounded shuffle buffer of encoded samples ─▶ decode + augment ─▶ (image, target)

A sample's target comes from the `label_ids` make-shards recorded in its `<key>.json`
(shards/labels.py), through `Targets`; its tags are never matched again.

Every training epoch visits every sample exactly once across all ranks and workers: each
stream yields exactly `per_stream()` samples, a whole number of batches, and the few needed
to make the streams equal (less than one batch per stream) are padding taken from the start
of the sequence. One shard on many streams is split by sample ranges, not shared whole.
A sample that cannot be read is replaced by the next readable one of its stream (repeated),
so every rank takes the same number of steps whatever is dropped. Unreadable shards and
samples are skipped with a warning and counted in `errors`. Evaluation streams (`exact=False`)
read each sample once, without padding or replacement.
"""

from __future__ import annotations

import bisect
import copy
import io
import json
import logging
import math
import random

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from torchvision.transforms import v2

from shards.errors import LabelsError
from shards.labels import label_ids
from shards.manifest import Split
from shards.reader import image_member
from shards.streams import tar_samples

from .errors import DataError
from .normalization import Normalization

log = logging.getLogger(__name__)
MAX_WORKERS = 64
CROP_SCALE = (0.85, 1.0)           # the default crop keeps borders and objects in the picture


def rank_info() -> tuple[int, int]:
    """(rank, world size) of this process's group; (0, 1) outside one. A DataLoader worker
    started by `forkserver` or `spawn` is outside it, so call this in the main process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def stream_ranges(counts: list[int], order: list[int], shift: int, first: int,
                  last: int) -> list[tuple[int, int, int]]:
    """(shard, start, stop) sample ranges covering positions [first, last) of the sequence
    "shards in `order`, rotated left by `shift`", wrapping around its end (padding)."""
    order = [i for i in order if counts[i] > 0]
    starts, total = [], 0
    for i in order:
        starts.append(total)
        total += counts[i]
    out: list[tuple[int, int, int]] = []
    pos = first
    while pos < last and total:
        at = (pos + shift) % total
        j = bisect.bisect_right(starts, at) - 1
        offset = at - starts[j]
        take = min(counts[order[j]] - offset, last - pos)
        out.append((order[j], offset, offset + take))
        pos += take
    return out


class Targets:
    """A sample's `label_ids` (rows of the shards' tags.csv, as `prep make-shards` recorded
    them: shards/labels.py) -> the target vector of the run's outputs.

    multilabel: the multi-hot of the ids; multiclass: the one-hot of the sample's single label
    (make-shards gives a `--folder` class image exactly one; a sample with none or several is
    refused with ValueError, which the stream counts and skips); binary: whether the
    positive's row is among the ids. `rows` names the rows the ids index (the shards'
    tags.csv) when they are not the run's `names` (a run scored on other shards): an id then
    counts for the run's output of the same row name, and a row the run lacks for none.

    `with_teacher(scores)` gives the training targets of an extension run (train/teacher.py):
    the outputs the teacher covers take its score of the sample (by key) where the sample's
    labels do not name them, and 1 where they do."""

    def __init__(self, names: list[str], task: str, positive: str | None = None,
                 rows: list[str] | None = None):
        self.task = task
        self.positive = positive if positive is not None else (names[0] if names else None)
        self.size = 1 if task == "binary" else len(names)
        rows = list(names) if rows is None else list(rows)
        self.rows = len(rows)
        self._positive_row = rows.index(self.positive) if self.positive in rows else None
        output = {n: i for i, n in enumerate(names)}
        self._output = [output.get(n, -1) for n in rows]
        self.teacher = None

    def with_teacher(self, teacher) -> Targets:
        """These targets with the soft targets of `teacher` (a TeacherScores) for its
        columns; multilabel only."""
        if self.task != "multilabel":
            raise ValueError(f"teacher targets are multilabel, not {self.task}")
        soft = copy.copy(self)
        soft.teacher = teacher
        return soft

    def __call__(self, label_ids: list[int], key: str | None = None) -> torch.Tensor:
        """The target of one sample (`key` names it to the teacher). Raises ValueError for
        an id that is not a row, a multiclass sample without exactly one label, or a sample
        the teacher has no scores for."""
        bad = [i for i in label_ids if not 0 <= i < self.rows]
        if bad:
            raise ValueError(f"label id {bad[0]} is not a row of the run's tag index "
                             f"({self.rows} rows): the shards were built with another tags.csv")
        out = torch.zeros(self.size)
        if self.task == "binary":
            out[0] = float(self._positive_row is not None and self._positive_row in label_ids)
            return out
        hits = sorted({self._output[i] for i in label_ids} - {-1})
        if self.task == "multiclass" and len(hits) != 1:
            raise ValueError(f"{len(hits)} class labels: a multiclass sample has exactly one")
        if self.teacher is not None:
            soft = self.teacher.row(key)
            if soft is None:
                raise ValueError(f"the teacher has no scores for sample {key}")
            out[torch.from_numpy(self.teacher.columns)] = torch.from_numpy(
                soft.astype(np.float32))
        out[hits] = 1.0                         # a label overrides the teacher
        return out


def transforms(image_size: int, train: bool, scale: tuple[float, float] = CROP_SCALE,
               trivial_augment: bool = False, normalization: Normalization | None = None):
    """uint8 CHW tensor -> float tensor normalised as the weights expect (`normalization`,
    default ImageNet's); when training, a random crop that keeps most of the picture (`scale`
    of its area, near its aspect ratio) and a flip. Resizing uses the weights' interpolation."""
    norm = normalization or Normalization()
    steps = []
    if train:
        steps += [v2.RandomResizedCrop(image_size, scale=scale, ratio=(0.9, 1.1),
                                       interpolation=norm.mode, antialias=True),
                  v2.RandomHorizontalFlip()]
        if trivial_augment:
            steps.append(GeometricTrivialAugment())
    else:
        steps.append(v2.Resize((image_size, image_size), interpolation=norm.mode,
                               antialias=True))
    steps.append(norm.transform())
    return v2.Compose(steps)


class GeometricTrivialAugment(v2.TrivialAugmentWide):
    """TrivialAugment without its colour operations: tag colours must stay true."""

    _AUGMENTATION_SPACE = {k: v for k, v in v2.TrivialAugmentWide._AUGMENTATION_SPACE.items()
                           if k in {"Identity", "ShearX", "ShearY", "TranslateX", "TranslateY",
                                    "Rotate"}}


def decode_image(data: bytes) -> torch.Tensor:
    """Encoded bytes -> uint8 CHW tensor (simplejpeg for JPEG, Pillow otherwise)."""
    if data[:3] == b"\xff\xd8\xff":
        import simplejpeg
        array = simplejpeg.decode_jpeg(data, colorspace="RGB")
    else:
        with Image.open(io.BytesIO(data)) as im:
            array = np.asarray(im.convert("RGB"))
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


class ShardStream(IterableDataset):
    """One epoch of (image, target, key) for this rank's DataLoader workers. With
    `transform=None` the image stays encoded (JPEG bytes) for `DeviceDecoder`.

    `rank` and `world` (default: this process's group, read here, in the main process) travel
    to the workers with the dataset: a worker started by `forkserver` or `spawn` has no
    process group of its own to ask."""

    def __init__(self, split: Split, targets: Targets, transform, *, seed: int = 0,
                 shuffle: bool = True, shuffle_buffer: int = 1000, open_shards: int = 4,
                 exact: bool = True, batch_size: int = 1, rank: int | None = None,
                 world: int | None = None):
        super().__init__()
        group_rank, group_world = rank_info()
        self.rank = group_rank if rank is None else rank
        self.world = group_world if world is None else world
        if not 0 <= self.rank < self.world:
            raise DataError(f"rank {self.rank} is not one of {self.world} ranks")
        if not split.urls:
            raise DataError("no shards to read")
        self.split = split
        self.counts = split.shard_counts()
        self.targets = targets
        self.transform = transform
        self.seed = seed
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.open_shards = open_shards
        self.exact = exact                  # False: one pass over the samples (evaluation)
        self.epoch = 0
        self.skip_batches = 0               # batches already trained this epoch (resume)
        self.batch_size = batch_size
        self.errors = torch.zeros(MAX_WORKERS, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int, skip_batches: int = 0, batch_size: int | None = None) -> None:
        """Start `epoch`; on resume, pass over the batches already trained (before decoding).

        DataLoader takes batches from its workers in turn, so worker w made
        `k // W + (w < k % W)` of the first k batches."""
        self.epoch, self.skip_batches = epoch, skip_batches
        self.batch_size = batch_size or self.batch_size

    def per_stream(self, workers: int, ranks: int | None = None) -> int:
        """Samples each stream yields per training epoch: a whole number of batches, enough
        for the streams together to cover every sample."""
        streams = max(1, (ranks or self.world) * max(1, workers))
        return self.batch_size * math.ceil(sum(self.counts) / (streams * self.batch_size))

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        yield from self.stream(self.rank, self.world, worker, workers)

    def stream(self, rank: int, ranks: int, worker: int, workers: int):
        """The items of one (rank, worker) stream; `__iter__` passes the dataset's rank and
        world and the DataLoader worker's id."""
        # DataLoader takes its first batch from worker 0; after k batches it would have been
        # worker k % W's turn, so on resume the workers swap roles to keep the order.
        k = self.skip_batches if self.exact else 0
        role = (worker + k) % workers
        stream, streams = rank * workers + role, ranks * workers
        skip = (k // workers + (role < k % workers)) * self.batch_size
        ranges = self._ranges(stream, streams, workers, ranks)
        rng = random.Random(f"{self.seed}/{self.epoch}/{stream}")
        samples = self._interleaved(ranges, worker)
        if self.shuffle:
            samples = _buffer_shuffle(samples, self.shuffle_buffer, rng)
        if not self.exact:
            for sample in samples:
                item = self._prepare(sample, worker)
                if item is not None:
                    yield item
            return
        yield from self._exactly(samples, self.per_stream(workers, ranks), skip, stream, worker)

    def _ranges(self, stream: int, streams: int, workers: int, ranks: int) -> list:
        total = sum(self.counts)
        order, shift = list(range(len(self.counts))), 0
        if self.shuffle:
            rng = random.Random(self.seed * 1000003 + self.epoch)
            rng.shuffle(order)
            shift = rng.randrange(max(1, total))
        if self.exact:
            per = self.per_stream(workers, ranks)
            first, last = stream * per, (stream + 1) * per
        else:
            first, last = stream * total // streams, (stream + 1) * total // streams
        return [(self.split.urls[i], a, b)
                for i, a, b in stream_ranges(self.counts, order, shift, first, last)]

    def _exactly(self, samples, want: int, skip: int, stream: int, worker: int):
        """Exactly `want - skip` items: an unreadable sample is replaced by the next readable
        one (or the last, at the end), so every stream takes the same number of batches."""
        n = owed = 0
        last = None
        for sample in samples:
            if n >= want:
                break
            n += 1
            if n <= skip:
                continue
            # Augmentation is a pure function of (seed, epoch, stream, position), so a run
            # resumed mid-epoch sees exactly the crops an uninterrupted one would have; the
            # global RNG (dropout, the model's) is left as it was.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(
                    hash((self.seed, self.epoch, stream, n)) & 0x7FFF_FFFF)
                item = self._prepare(sample, worker)
            if item is None:
                owed += 1
                continue
            for _ in range(owed + 1):
                yield item
            last, owed = item, 0
        owed += want - max(n, skip)
        if owed and last is None:
            raise DataError(f"stream {stream} of epoch {self.epoch} found no readable sample "
                            "to stand in for the unreadable ones")
        for _ in range(owed):
            yield last

    def _interleaved(self, ranges: list[tuple[str, int, int]], worker: int):
        """Samples of `open_shards` ranges at a time."""
        pending = list(ranges)
        open_now = [self._samples(*r, worker) for r in pending[: self.open_shards]]
        pending = pending[self.open_shards:]
        while open_now:
            for it in list(open_now):
                sample = next(it, None)
                if sample is None:
                    open_now.remove(it)
                    if pending:
                        open_now.append(self._samples(*pending.pop(0), worker))
                else:
                    yield sample

    def _samples(self, url: str, start: int, stop: int, worker: int):
        """Samples [start, stop) of one tar shard (the ones before `start` are not decoded)."""
        n = 0
        try:
            for sample in tar_samples(url):
                if n >= stop:
                    return
                if n >= start:
                    yield sample
                n += 1
        except Exception as exc:  # noqa: BLE001 - a broken shard must not stop training
            self.errors[worker] += 1
            log.warning("skipping the rest of %s: %s", url, exc)
            return
        if n < stop:
            self.errors[worker] += 1
            log.warning("%s has %d samples, its manifest says at least %d", url, n, stop)

    def _prepare(self, sample: dict, worker: int):
        key = str(sample.get("__key__"))
        try:
            target = self.targets(label_ids(json.loads(sample["json"]), key), key)
            _, data = image_member(sample)
            if self.transform is None:          # decoded later, on the training device
                if data[:3] != b"\xff\xd8\xff":
                    raise ValueError("device decoding needs JPEG shards")
                return torch.frombuffer(bytearray(data), dtype=torch.uint8), target, key
            return self.transform(decode_image(data)), target, key
        except LabelsError as exc:              # shards without labels: no sample has any
            raise DataError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - one bad sample is skipped and counted
            self.errors[worker] += 1
            log.warning("skipping sample %s: %s", key, exc)
            return None


def _buffer_shuffle(samples, size: int, rng: random.Random):
    """A bounded reservoir shuffle of encoded samples (shuffle before decoding)."""
    buffer: list = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = rng.randrange(len(buffer))
        yield buffer[i]
        buffer[i] = sample
    rng.shuffle(buffer)
    yield from buffer


def encoded_collate(batch: list) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
    """Batch encoded images as a list (their lengths differ)."""
    images, targets, keys = zip(*batch, strict=True)
    return list(images), torch.stack(targets), list(keys)


class DeviceDecoder:
    """JPEG decoding and the transforms on the training device (nvJPEG on a GPU), for when
    the CPU cores cannot decode as fast as the GPU trains."""

    def __init__(self, transform, device: torch.device):
        self.transform = transform
        self.device = device

    def __call__(self, encoded: list[torch.Tensor]) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg
        images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        return torch.stack([self.transform(im) for im in images])
