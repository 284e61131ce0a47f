"""Sharded exact estimation: rows split over ``torch.distributed`` ranks, partial posterior states merged exactly.

Every rank holds the data and draws the same queries (same seed); rank r scans only its contiguous share of
the rows, and the per-(level, query) shifted log-sum-exp states are all-gathered and merged in rank order
(``PosteriorSums.merge``), so every rank ends with the same numbers as a single process (up to fp rounding
of the chunk boundaries). Each rank computes where its rows live: on the CPU under gloo, on its own GPU
(``cuda:LOCAL_RANK``) under NCCL, where the collectives then run on the GPU states directly.

Two ways to launch:
- ``torchrun --nnodes=2 --nproc-per-node=4 ... -m diffloss optimal-loss ...`` (the CLI notices ``WORLD_SIZE``
  and joins the process group: gloo for ``--device cpu``, NCCL for CUDA), or in Python
  ``exact_optimal_loss(x, s, partition=DistributedRows())`` after ``init_process_group``;
- ``spawn_optimal_loss(x, s, workers=N, ...)`` (``--workers N``): N local processes over gloo.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diffloss.device import default_threads, set_threads
from diffloss.errors import DifflossError
from diffloss.optimal.exact import REL_STDERR, RowPartition, exact_optimal_loss
from diffloss.optimal.inputs import as_levels, as_rows, check_options, class_groups
from diffloss.optimal.posterior import PosteriorSums
from diffloss.optimal.result import OptimalLossResult


class DistributedRows(RowPartition):
    """Rows split contiguously over the ranks of the default process group."""

    def __init__(self) -> None:
        if not dist.is_initialized():
            raise DifflossError("DistributedRows needs torch.distributed.init_process_group() first")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def local(self, n: int) -> slice:
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def combine(self, state: PosteriorSums) -> PosteriorSums:
        local = state.stack().contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local)
        merged = PosteriorSums.unstack(parts[0])
        for p in parts[1:]:
            merged = merged.merge(PosteriorSums.unstack(p))
        return merged

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        t = t.contiguous()
        dist.all_reduce(t)
        return t


def init_from_env(device: torch.device) -> bool:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1) for work on ``device``
    (gloo on a CPU, NCCL on this rank's GPU); False if there is none."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def is_main_process() -> bool:
    """True outside a process group and on rank 0 of one: the process that writes outputs."""
    return not dist.is_initialized() or dist.get_rank() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(
    rank: int, world: int, port: int, threads: int, x: np.ndarray, sigmas: np.ndarray, kwargs: dict, out: str
) -> None:
    set_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        progress = kwargs.pop("progress", False) and rank == 0
        result = exact_optimal_loss(x, sigmas, partition=DistributedRows(), progress=progress, **kwargs)
        if rank == 0:
            with open(out, "wb") as f:
                pickle.dump(result, f)
    finally:
        dist.destroy_process_group()


def spawn_optimal_loss(
    x: np.ndarray, sigmas: np.ndarray, *, workers: int, threads: int = 0, **kwargs: Any
) -> OptimalLossResult:
    """``exact_optimal_loss`` with the rows split over ``workers`` local CPU processes (gloo), each using
    ``threads`` intra-op threads (0: an equal share of the cores); one worker runs in this process, as it is
    set up. Keyword arguments are those of ``exact_optimal_loss`` (but ``partition``)."""
    if workers < 1:
        raise DifflossError(f"--workers must be >= 1, got {workers}")
    if workers == 1:
        return exact_optimal_loss(x, sigmas, **kwargs)
    if torch.device(kwargs.get("device") or "cpu").type != "cpu":
        raise DifflossError("--workers splits rows over local CPU processes; on GPUs use torchrun, one rank per GPU")
    threads = threads or max(1, default_threads() // workers)
    x, sigmas = as_rows(x), as_levels(sigmas)  # fail here with a one-line error, not in N worker tracebacks
    check_options(kwargs.get("queries"), kwargs.get("rel_stderr", REL_STDERR))
    class_groups(len(x), kwargs.get("labels"))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.pkl")
        mp.spawn(_worker, args=(workers, _free_port(), threads, x, sigmas, kwargs, out), nprocs=workers)
        with open(out, "rb") as f:
            return pickle.load(f)
