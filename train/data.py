"""The streaming data path: shards -> workers -> shuffled, decoded, augmented batches.

    manifest ─▶ shard order (reshuffled each epoch from the seed)
             ─▶ dealt round-robin to (rank, worker) streams
             ─▶ each stream interleaves `open_shards` tar files (webdataset's tar stages)
             ─▶ bounded shuffle buffer of encoded samples ─▶ decode + augment ─▶ (image, target)

An epoch is the manifest's sample count split evenly: every stream yields exactly
`samples // (ranks * workers)` samples, wrapping around its shards if they run short, so all
ranks take the same number of steps. Nothing but the shuffle buffer is held in memory.
Unreadable shards and samples are skipped with a warning and counted in `errors`.
"""

from __future__ import annotations

import io
import json
import logging
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from torchvision.transforms import v2

from shards.errors import ManifestError
from shards.manifest import split_samples, split_shards
from shards.streams import tar_samples

from .errors import DataError

log = logging.getLogger(__name__)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
IMAGE_KEYS = ("jpg", "jpeg", "webp", "png")
MAX_WORKERS = 64


@dataclass
class Split:
    urls: list[str]
    samples: int


def split_of(root: str, manifest: dict, name: str) -> Split:
    """Shard URLs and sample count of one split (train or val) of a shards manifest."""
    try:
        shards = split_shards(manifest, root, name)
    except ManifestError as exc:
        raise DataError(str(exc)) from None
    return Split([s["url"] for s in shards], split_samples(manifest, name))


def rank_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Targets:
    """Sample tags -> a target vector, through the run's tag index, by name."""

    def __init__(self, names: list[str], task: str, positive: str | None = None):
        self.index = {n: i for i, n in enumerate(names)}
        self.task = task
        self.positive = positive if positive is not None else (names[0] if names else None)
        self.size = 1 if task == "binary" else len(names)

    def __call__(self, tags: list[str]) -> torch.Tensor | None:
        out = torch.zeros(self.size)
        if self.task == "binary":
            out[0] = float(self.positive in tags)
            return out
        hits = [self.index[t] for t in tags if t in self.index]
        if self.task == "multiclass":
            if not hits:
                return None
            out[hits[0]] = 1.0
            return out
        out[hits] = 1.0
        return out


def transforms(image_size: int, train: bool, scale: tuple[float, float] = (0.6, 1.0),
               trivial_augment: bool = False):
    """uint8 CHW tensor -> normalised float tensor; random crop and flip when training."""
    steps = []
    if train:
        steps += [v2.RandomResizedCrop(image_size, scale=scale, antialias=True),
                  v2.RandomHorizontalFlip()]
        if trivial_augment:
            steps.append(GeometricTrivialAugment())
    else:
        steps.append(v2.Resize((image_size, image_size), antialias=True))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)]
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
    `transform=None` the image stays encoded (JPEG bytes) for `DeviceDecoder`."""

    def __init__(self, split: Split, targets: Targets, transform, seed: int = 0,
                 shuffle: bool = True, shuffle_buffer: int = 1000, open_shards: int = 4,
                 exact: bool = True):
        super().__init__()
        if not split.urls:
            raise DataError("no shards to read")
        self.split = split
        self.targets = targets
        self.transform = transform
        self.seed = seed
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer
        self.open_shards = open_shards
        self.exact = exact                  # False: one pass over the shards (evaluation)
        self.epoch = 0
        self.skip_batches = 0               # batches already trained this epoch (resume)
        self.batch_size = 1
        self.errors = torch.zeros(MAX_WORKERS, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int, skip_batches: int = 0, batch_size: int = 1) -> None:
        """Start `epoch`; on resume, pass over the batches already trained (before decoding).

        DataLoader takes batches from its workers in turn, so worker w made
        `k // W + (w < k % W)` of the first k batches."""
        self.epoch, self.skip_batches, self.batch_size = epoch, skip_batches, batch_size

    def per_stream(self, workers: int) -> int:
        ranks = rank_info()[1]
        return self.split.samples // max(1, ranks * workers)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rank, ranks = rank_info()
        # DataLoader takes its first batch from worker 0; after k batches it would have been
        # worker k % W's turn, so on resume the workers swap roles to keep the order.
        k = self.skip_batches
        role = (worker + k) % workers
        stream, streams = rank * workers + role, ranks * workers
        skip = (k // workers + (role < k % workers)) * self.batch_size
        urls = list(self.split.urls)
        if self.shuffle:
            random.Random(self.seed * 1000003 + self.epoch).shuffle(urls)
        mine = urls[stream::streams]
        if not mine and self.exact:          # fewer shards than streams: share them
            mine = [urls[stream % len(urls)]]
        rng = random.Random(f"{self.seed}/{self.epoch}/{stream}")
        samples = self._interleaved(mine, worker)
        if self.shuffle:
            samples = _buffer_shuffle(samples, self.shuffle_buffer, rng)
        want = self.split.samples // streams if self.exact else None
        n = 0
        for sample in samples:
            if want is not None and n >= want:
                return
            n += 1
            if n <= skip:
                continue
            # Augmentation is a pure function of (seed, epoch, stream, position), so a run
            # resumed mid-epoch sees exactly the crops an uninterrupted one would have.
            torch.manual_seed(hash((self.seed, self.epoch, stream, n)) & 0x7FFF_FFFF)
            item = self._prepare(sample, worker)
            if item is not None:
                yield item

    def _interleaved(self, urls: list[str], worker: int):
        """Samples from `open_shards` shards at a time; wraps around in exact mode."""
        pending, rounds = list(urls), 0
        while pending:
            open_now = [self._samples(u, worker) for u in pending[: self.open_shards]]
            pending = pending[self.open_shards:]
            while open_now:
                for it in list(open_now):
                    sample = next(it, None)
                    if sample is None:
                        open_now.remove(it)
                        if pending:
                            open_now.append(self._samples(pending.pop(0), worker))
                    else:
                        yield sample
            rounds += 1
            if self.exact and rounds < 1000:
                pending = list(urls)

    def _samples(self, url: str, worker: int):
        try:
            yield from tar_samples(url)
        except Exception as exc:  # noqa: BLE001 - a broken shard must not stop training
            self.errors[worker] += 1
            log.warning("skipping the rest of %s: %s", url, exc)

    def _prepare(self, sample: dict, worker: int):
        try:
            meta = json.loads(sample["json"])
            data = next(sample[k] for k in IMAGE_KEYS if k in sample)
            tags = list(meta.get("tags") or meta.get("labels") or [])
            if meta.get("rating"):              # rating rows of the index (category 9)
                tags.append(meta["rating"])
            target = self.targets(tags)
            if target is None:
                return None
            key = str(sample.get("__key__"))
            if self.transform is None:          # decoded later, on the training device
                if data[:3] != b"\xff\xd8\xff":
                    raise ValueError("device decoding needs JPEG shards")
                return torch.frombuffer(bytearray(data), dtype=torch.uint8), target, key
            return self.transform(decode_image(data)), target, key
        except Exception as exc:  # noqa: BLE001 - one bad sample is skipped and counted
            self.errors[worker] += 1
            log.warning("skipping sample %s: %s", sample.get("__key__"), exc)
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
