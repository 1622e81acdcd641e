"""The trainer's data path: loader throughput and its efficiency when feeding a model.

    .venv/bin/python bench/train_stream.py [--shards DIR] [--models resnet18,resnet50,vgg16]
    .venv/bin/python bench/train_stream.py --models resnet50,vgg16,timm:vit_base_patch16_224 \
        --sizes 224,448 --baseline resnet50     # every family at two sizes, as ratios
    .venv/bin/python bench/train_stream.py --families-only --models ... --sizes 224,448  # (c)

Without --shards it builds 448 px shards first (emulator -> scrape -> make-tag-index ->
make-shards, about a minute). Then, in one run:
  (a) decode-only   one process reads the tar files and decodes every JPEG: the upper bound
      loader        the real ShardStream + DataLoader with W workers, 224 px random crops,
                    flips and normalisation, no model: samples/s, and per worker
  (b) for each model, training images/s fed by the real loader and fed synthetic tensors
      already on the device; loader-fed / synthetic is the loader's efficiency
  (c) for each model and --sizes, images/s of training (synthetic batch) and of inference
      (`tag`'s forward pass: eval mode, no gradients, synthetic batch), and both as ratios to
      the --baseline model at the first size, measured in the same run
It runs on the GPU when there is one, else on the CPU (where small batches and few steps keep
it short, and the loader's workers compete with the model for the same cores).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# bench/scrape.py would shadow the scrape package: keep bench/ off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from shards.manifest import read_manifest, split_of  # noqa: E402
from shards.reader import tar_samples  # noqa: E402
from shards.tags import read_tags  # noqa: E402
from train.data import (  # noqa: E402
    ShardStream,
    Targets,
    decode_image,
    transforms,
)
from train.losses import make_loss  # noqa: E402
from train.models import build_model  # noqa: E402


def build_shards(root: Path, posts: int) -> Path:
    from scrape.emulator import EmulatorThread
    raw, tags, shards = root / "raw", root / "tags.csv", root / "shards"
    with EmulatorThread(seed=0, posts=posts, image_scale=0.6) as emu:
        subprocess.run([sys.executable, "-m", "scrape", "--site", "danbooru", "--tags", "",
                        "--out", str(raw), "--base-url", emu.site("danbooru"), "--rate", "0",
                        "-q"], check=True)
    subprocess.run([sys.executable, "-m", "prep", "make-tag-index", "--posts", str(raw),
                    "--out", str(tags), "--top-k", "1000", "-q"], check=True)
    subprocess.run([sys.executable, "-m", "prep", "make-shards", "--posts", str(raw), "--tags",
                    str(tags), "--out", str(shards), "--image-size", "448",
                    "--samples-per-shard", "100", "-q"], check=True)
    return shards


def decode_only(urls: list[str], limit: int) -> float:
    n, start = 0, time.perf_counter()
    for sample in tar_samples([{"url": u} for u in urls]):
        decode_image(sample["jpg"])
        n += 1
        if n >= limit:
            break
    return n / (time.perf_counter() - start)


def loader_rate(dataset: ShardStream, workers: int, batch: int, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, drop_last=True)
    it = iter(loader)
    next(it)                                   # worker start-up is not throughput
    n, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            x, *_ = next(it)
        except StopIteration:
            break
        n += len(x)
    return n / (time.perf_counter() - start)


def train_rate(model, batches, loss_fn, device, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    n, start = 0, None
    for i, (x, y, *_) in enumerate(batches):
        if i == 2:                             # two warm-up steps
            if device.type == "cuda":
                torch.cuda.synchronize()
            n, start = 0, time.perf_counter()
        if i >= steps + 2:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(model(x.contiguous(memory_format=torch.channels_last)), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def infer_rate(model, x, device, steps: int) -> float:
    """Images/s of `tag`'s model step: eval mode, no gradients (bf16 autocast on CUDA)."""
    model.eval()
    with torch.inference_mode():
        for i in range(steps + 2):
            if i == 2:                         # two warm-up batches
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16,
                                enabled=device.type == "cuda"):
                model(x.contiguous(memory_format=torch.channels_last))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - start)


def family_rates(names: list[str], sizes: list[int], baseline: str, tags: int, batch: int,
                 device, steps: int) -> None:
    """(c): training and inference images/s per model and size, and ratios to the baseline."""
    loss_fn = make_loss("multilabel")
    rows = []
    for name in [baseline, *[n for n in names if n != baseline]]:
        for size in sizes:
            model = build_model(name, tags, weights="none", image_size=size).to(
                device, memory_format=torch.channels_last)
            x = torch.randn(batch, 3, size, size, device=device)
            y = (torch.rand(batch, tags, device=device) < 0.01).float()
            rows.append((name, size, train_rate(model, _repeat(x, y), loss_fn, device, steps),
                         infer_rate(model, x, device, steps)))
            del model
    base_train, base_infer = rows[0][2], rows[0][3]
    print(f"(c) training and inference (tag) img/s, ratios to {baseline} at {sizes[0]} px")
    for name, size, train, infer in rows:
        print(f"    {name:28s} {size:4d} px  train {train:8.1f} img/s ({train / base_train:5.2f}x)"
              f"   tag {infer:8.1f} img/s ({infer / base_infer:5.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=Path)
    ap.add_argument("--posts", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", default="resnet18,resnet50,vgg16")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=0, help="default: 128 on GPU, 16 on CPU")
    ap.add_argument("--steps", type=int, default=0, help="default: 30 on GPU, 4 on CPU")
    ap.add_argument("--sizes", default="",
                    help="(c): image sides for the per-family table, comma list (e.g. 224,448);"
                         " empty: leave (c) out")
    ap.add_argument("--baseline", default="resnet50", help="(c): the model the ratios are to")
    ap.add_argument("--families-only", action="store_true",
                    help="(c) only, for a 1,000-tag head: no shards, no loader")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (128 if device.type == "cuda" else 16)
    steps = args.steps or (30 if device.type == "cuda" else 4)
    if args.families_only:
        print(f"device {device}; batch {batch}; {steps} timed steps after 2 warm-up steps")
        family_rates(args.models.split(","), [int(v) for v in (args.sizes or "224").split(",")],
                     args.baseline, 1000, batch, device, steps)
        return
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or build_shards(Path(tmp), args.posts)
        manifest = read_manifest(str(shards))
        split = split_of(str(shards), manifest, "train")
        names = [t["name"] for t in read_tags(shards / "tags.csv")]
        targets = Targets(names, "multilabel")

        def stream() -> ShardStream:
            return ShardStream(split, targets, transforms(args.image_size, True),
                               shuffle_buffer=500)

        print(f"device {device}; {split.samples} samples in {len(split.urls)} shards; "
              f"{len(names)} tags; {args.image_size} px crops; batch {batch}")
        upper = decode_only(split.urls, split.samples)
        print(f"(a) decode-only, 1 process          {upper:8.1f} samples/s")
        for w in sorted({1, args.workers}):
            rate = loader_rate(stream(), w, batch, max(4, split.samples // batch - 2))
            print(f"    loader, {w} worker(s)             {rate:8.1f} samples/s "
                  f"({rate / w:.1f} per worker, {rate / w / upper:.0%} of decode-only)")
        loss_fn = make_loss("multilabel")
        for name in args.models.split(","):
            model = build_model(name, len(names), weights="none",
                                image_size=args.image_size).to(
                device, memory_format=torch.channels_last)
            x = torch.randn(batch, 3, args.image_size, args.image_size, device=device)
            y = (torch.rand(batch, len(names), device=device) < 0.01).float()
            synthetic = train_rate(model, _repeat(x, y), loss_fn, device, steps)
            loader = DataLoader(stream(), batch_size=batch, num_workers=args.workers,
                                drop_last=True, pin_memory=device.type == "cuda",
                                persistent_workers=True)
            fed = train_rate(model, _cycle(loader), loss_fn, device, steps)
            print(f"(b) {name:10s} synthetic {synthetic:8.1f} img/s   loader-fed {fed:8.1f} "
                  f"img/s   efficiency {fed / synthetic:.0%}")
        if args.sizes:
            family_rates(args.models.split(","), [int(v) for v in args.sizes.split(",")],
                         args.baseline, len(names), batch, device, steps)


def _repeat(x, y):
    while True:
        yield x, y


def _cycle(loader):
    while True:
        yield from loader


if __name__ == "__main__":
    main()
