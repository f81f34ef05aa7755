"""The ranks of a run: who this process is under ``torchrun``, and what they must agree on.

A single process is rank 0 of 1. Under DDP each rank trains on its shard of every epoch, and
after it the ranks share BatchNorm statistics and validate on shards whose sums are all-reduced,
so every rank takes the same early-stopping and best-model decisions.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import FaceSet
from .runtime import predict_logits


def dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world


def log(msg: str, rank: int) -> None:
    if rank == 0:
        print(msg, flush=True)


def sync_buffers(modules: list[nn.Module]) -> None:
    """Give every rank rank 0's BatchNorm statistics (and EMA buffers).

    DDP broadcasts buffers at the start of each forward, so after the last step of an
    epoch each rank holds statistics updated by its own batch: evaluating without this
    gives each rank a different val accuracy, and early stopping could then stop one
    rank and leave the other waiting forever in the next all-reduce.
    """
    import torch.distributed as dist

    for m in modules:
        for b in m.buffers():
            dist.broadcast(b, 0)


def validate(model: nn.Module, val_set: FaceSet, device: torch.device, dtype: torch.dtype | None,
             rank: int, world: int) -> tuple[float, float]:
    """(val loss, val accuracy); under DDP each rank scores a shard and the sums are all-reduced."""
    idx = np.arange(rank, len(val_set), world)
    logits = predict_logits(model, val_set.images if world == 1 else val_set.images[idx], device=device, dtype=dtype)
    target = torch.from_numpy(val_set.labels[idx])
    sums = torch.tensor([float(F.cross_entropy(logits, target, reduction="sum")) if len(idx) else 0.0,
                         float((logits.argmax(1) == target).sum()) if len(idx) else 0.0,
                         float(len(idx))], dtype=torch.float64)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(sums)
    return float(sums[0] / sums[2]), float(sums[1] / sums[2])
