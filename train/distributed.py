"""Running under `torchrun`: process group set-up and the few collective helpers a run needs.

    torchrun --nproc_per_node 8 -m train --stream --shards shards/ --out run/   (one node)

NCCL on GPUs, gloo on CPU. Rank 0 writes every file; all ranks read the checkpoint to resume,
so `--out` must be on a filesystem every node shares (a run checks that all ranks found the
same checkpoint and stops with a clear message when they did not).
"""

from __future__ import annotations

import os
from datetime import timedelta

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


def total(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums of numbers over all ranks (a weighted mean is two sums)."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_rows(tensor: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """Each rank's rows (validation scores or targets) concatenated on rank 0, as a tensor
    (None on the other ranks): ranks pad to the longest, rank 0 trims."""
    if not active():
        return tensor
    rows = torch.tensor([len(tensor)], device=device)
    counts = [torch.zeros_like(rows) for _ in range(world_size())]
    dist.all_gather(counts, rows)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[: len(tensor)] = tensor.to(device)
    parts = [torch.empty_like(padded) for _ in range(world_size())] if is_main() else None
    dist.gather(padded, parts, dst=0)
    if not is_main():
        return None
    return torch.cat([p[: int(c.item())].cpu() for p, c in zip(parts, counts, strict=True)])


def average_gradients(module: torch.nn.Module) -> None:
    """Each parameter's gradient averaged over all ranks, as DDP's all-reduce would have it
    (for micro-batches whose backward ran in `no_sync()` with no syncing one after them)."""
    if not active():
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world_size())


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: after the last training
    forward each rank holds its own, and every rank must evaluate the model rank 0 exports."""
    if active():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def broadcast(obj):
    """Rank 0's `obj` on every rank (a small picklable object)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_same_checkpoint(step: int | None) -> None:
    """Fail on every rank when ranks found different checkpoints (or some found none):
    each node then reads its own `--out`, which must be on a filesystem all nodes share."""
    if not active():
        return
    seen: list = [None] * world_size()
    dist.all_gather_object(seen, step)
    if len(set(seen)) > 1:
        from .errors import TrainError
        raise TrainError(f"ranks disagree about the checkpoint to resume from (steps by rank: "
                         f"{seen}); --out must be on a filesystem shared by every node")


def teardown() -> None:
    if active():
        dist.destroy_process_group()
