"""Every training setting, with its default, in one place; `config.json` is this, resolved."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from cli_kit.workers import LOADER_CAP, default_workers


def local_ranks() -> int:
    """The training processes on this machine (torchrun's ``LOCAL_WORLD_SIZE``; else 1)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def default_loader_workers() -> int:
    """``workers``' default: the CPUs of this machine shared by its ranks, at most
    ``LOADER_CAP`` (cli_kit.workers: the one rule of every command)."""
    return default_workers(LOADER_CAP, local_ranks())


@dataclass
class TrainSettings:
    shards: str                          # folder or base URL holding manifest.json, or a
                                         # brace pattern of tar URLs (with tags)
    out: str                             # the run folder
    tags: str | None = None              # tags.csv path or URL (default: the shards' copy)
    epoch_samples: int | None = None     # samples expected of a shard pattern (a check)
    # model
    model: str = "resnet50"              # the architecture (--arch): torchvision's or timm:NAME
    weights: str = "imagenet"            # imagenet | none | FILE.pth|.safetensors | FOLDER
    weights_partial: bool = False        # load what fits instead of refusing a partial file
    head: str = "linear"                 # linear (pool, dropout, linear) | mlp (alt-i2v)
    dropout: float = 0.2
    head_bias: str = "prior"             # prior (each tag's log-odds in the shards) | default
    task: str | None = None              # multilabel | multiclass | binary (default: manifest)
    positive: str | None = None          # binary: the class that is "present"
    init_from: str | None = None         # a previous run (the layers that fit) or a WD v3
                                         # tagger folder (its model, head regrown by name)
    keep_tags: str = "all"               # with a WD folder: all (its tags + the data's) | seen
    old_tags: str | None = None          # carried tags' targets: teacher (the starting
                                         # model's scores; default when tags are carried)
                                         # | labels (absent means 0)
    freeze_old_rows: bool = False        # the carried head rows stay the source's exactly
    retention_shards: str | None = None  # held-out old-kind shards for the forgetting
                                         # measure (default: the validation split)
    # optimisation
    loss: str = "bce"                    # bce | focal | asymmetric (multilabel)
    optimizer: str = "adamw"             # adamw | sgd
    lr: float = 3e-4
    lr_backbone: float | None = None     # peak lr of the backbone's groups (default: lr)
    layer_decay: float | None = None     # each timm backbone layer's lr: this ** (layers above)
    weight_decay: float = 0.05
    momentum: float = 0.9                # sgd
    epochs: int = 10
    batch_size: int = 64
    grad_accum: int = 1
    warmup_steps: int | None = None      # default: 5% of the optimizer steps
    freeze_backbone: bool = False        # linear probe on frozen features
    head_warmup_steps: int = 0           # train only the head for this many steps first
    ema: float = 0.0                     # decay of an EMA of the weights (0: off)
    # data
    image_size: int = 224
    crop_scale: tuple[float, float] = (0.85, 1.0)   # keeps borders and objects in the picture
    trivial_augment: bool = False        # TrivialAugment without colour operations
    workers: int = field(default_factory=default_loader_workers)  # DataLoader processes
                                         # per rank; 0 = in the main process
    shuffle_buffer: int = 2000
    open_shards: int = 4
    seed: int = 0
    # hardware
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    precision: str = "auto"              # auto (bf16 on CUDA if supported, else fp16 with a
                                         # GradScaler; fp32 on CPU) | bf16 | fp16 | fp32
    channels_last: bool = True
    compile: bool = False
    device_decode: bool = False          # decode JPEGs on the training device (nvJPEG)
    # evaluation, checkpoints, progress
    threshold: float = 0.4
    min_support: int = 5                 # per-tag thresholds need this many positives
    eval_every: int = 0                  # optimizer steps between evaluations (0: per epoch)
    checkpoint_every: int = 500
    log_every: int = 20
    log: str = "none"                    # none | tensorboard (events in run/tensorboard/)
    max_steps: int | None = None         # stop early (the schedule still spans all epochs)
    resume: bool = False
    keep: str = "best"                   # best | last: which model model.safetensors is
    allow_incomplete: bool = False       # train on an unfinished shard build
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
