"""Rows of a job split over the ranks of a torchrun group (``diffloss.device.World``), and gathered back.

Convention: of ``n`` rows, rank r of N takes the contiguous share ``[r n // N, (r + 1) n // N)`` (``rank_rows``):
shares differ by at most one row and, in rank order, are the rows 0 .. n - 1. A rank whose work on a row depends
only on the row's index (and the seed) therefore computes what a single process computes for that row, and
``gather_rows`` reassembles the single-process result.
"""

from __future__ import annotations

import torch

from diffloss.device import World


def rank_rows(n: int, world: World) -> range:
    """The rows of ``n`` that rank ``world.rank`` of ``world.size`` handles (all of them in a single process)."""
    return range(world.rank * n // world.size, (world.rank + 1) * n // world.size)


def gather_rows(local: torch.Tensor, world: World) -> torch.Tensor:
    """The rows of every rank, in rank order, on every rank: ``local`` (any number of rows) of rank 0, then of rank
    1, ...; ``local`` itself in a single process. With shares from ``rank_rows`` that is the single-process result.
    A collective: every rank calls it. Tensors travel on ``local``'s device, which must suit the process group's
    backend (the CPU for gloo, the rank's GPU for NCCL)."""
    if not world.distributed:
        return local
    import torch.distributed as dist

    counts = [torch.zeros(1, dtype=torch.int64, device=local.device) for _ in range(world.size)]
    dist.all_gather(counts, torch.tensor([len(local)], device=local.device))
    sizes = [int(c) for c in counts]
    padded = local.new_zeros((max(sizes), *local.shape[1:]))  # all_gather takes equal shapes
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])
