"""Running under `torchrun`: process group set-up and the few collective helpers a run needs.

    torchrun --nproc_per_node 8 -m train --stream --shards shards/ --out run/   (one node)

NCCL on GPUs, gloo on CPU. Rank 0 writes every file; all ranks read the checkpoint to resume.
"""

from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist


def setup() -> tuple[int, int, int]:
    """(rank, world size, local rank); starts the process group when torchrun launched us."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return rank(), world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local)
    return dist.get_rank(), dist.get_world_size(), local


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def mean(value: float, device: torch.device) -> float:
    """The mean of a number over all ranks."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / world_size()


def gather_rows(array: np.ndarray) -> np.ndarray:
    """Concatenate each rank's rows (validation scores or targets) on every rank."""
    if not active():
        return array
    parts: list = [None] * world_size()
    dist.all_gather_object(parts, array)
    parts = [p for p in parts if p is not None and len(p)]
    return np.concatenate(parts) if parts else array


def teardown() -> None:
    if active():
        dist.destroy_process_group()
