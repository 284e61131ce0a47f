"""Where the work runs: the device (``--device``), the arithmetic precision (``--precision``), the CPU thread count
(``--threads``) and the data-parallel process group (``torchrun``).

Conventions shared by every heavy command:

- ``--device auto`` (the default) is ``cuda`` when CUDA is available, else ``cpu``; ``cuda:N`` names one GPU. Under
  ``torchrun`` with CUDA, ``auto`` and ``cuda`` mean the rank's own GPU, ``cuda:LOCAL_RANK``.
- ``--precision fp32`` (the default) computes in float32 everywhere. ``tf32`` lets CUDA matmuls and convolutions use
  TensorFloat-32 (about 10 mantissa bits, relative error ~1e-3 per product); it needs CUDA. ``bf16`` runs the network's
  forward and backward under ``torch.autocast(dtype=torch.bfloat16)``, on CUDA or on the CPU (where it is slower than
  fp32 on most machines but works); parameters, optimizer state and EMA stay float32.
- ``--threads 0`` (the default) uses every core the process may run on (``os.sched_getaffinity``).
- A process started by ``torchrun`` (``WORLD_SIZE`` in the environment) is one rank of a group: gloo on CPU, NCCL on
  CUDA (``init_distributed``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from diffloss.errors import DifflossError

PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel group: ``rank`` of ``size`` processes, ``local_rank`` on its node.
    A plain (non-torchrun) process is rank 0 of 1."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """The ``World`` described by torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); rank 0 of 1 if
    they are absent."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise DifflossError("WORLD_SIZE, RANK and LOCAL_RANK must be integers; start with torchrun") from None
    if size < 1 or not 0 <= rank < size:
        raise DifflossError(f"RANK {rank} is outside WORLD_SIZE {size}; start the command with torchrun")
    return World(rank, size, local)


def resolve_device(spec: str = "auto", world: World | None = None) -> torch.device:
    """The torch device named by ``--device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``), checked against this machine.

    Raises ``DifflossError`` (one line, what to do) for an unknown name, CUDA without CUDA, or a GPU index beyond
    the machine's count."""
    world = world or World()
    spec = spec.strip().lower()
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if spec != "cuda" and not spec.startswith("cuda:"):
        raise DifflossError(f"--device {spec!r} is not one of auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise DifflossError(f"--device {spec}: CUDA is not available on this machine; use --device cpu (or auto)")
    count = torch.cuda.device_count()
    if spec == "cuda":
        index = world.local_rank if world.distributed else torch.cuda.current_device()
    else:
        try:
            index = int(spec.split(":", 1)[1])
        except ValueError:
            raise DifflossError(f"--device {spec!r}: the GPU index must be an integer, as in cuda:0") from None
    if not 0 <= index < count:
        raise DifflossError(f"--device {spec}: this machine has {count} GPU(s) (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a ``--precision`` this device cannot run, in one line."""
    if precision not in PRECISIONS:
        raise DifflossError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "tf32" and device.type != "cuda":
        raise DifflossError("--precision tf32 needs a CUDA device (TensorFloat-32 is a GPU format); use fp32 or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DifflossError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp32 or tf32")


def set_matmul_precision(precision: str) -> None:
    """Allow (``tf32``) or forbid (anything else) TensorFloat-32 in CUDA matmuls and convolutions, process-wide."""
    allow = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context a network's forward (and so its backward) runs under: bf16 autocast for ``bf16``, nothing else."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def default_threads() -> int:
    """The number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """Set torch's intra-op CPU threads: ``threads`` if > 0, else every available core (divided among the ranks of a
    torchrun group on the same node). Returns the number set."""
    if threads < 0:
        raise DifflossError(f"--threads must be >= 0 (0 = every core), got {threads}")
    if threads == 0:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        threads = max(1, default_threads() // max(1, local))
    torch.set_num_threads(threads)
    return threads


def barrier(world: World) -> None:
    """Wait until every rank of the group gets here (nothing for a single process)."""
    if world.distributed:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the body (gloo on CPU, NCCL on CUDA) and leave it after; nothing for a
    single process."""
    if not world.distributed:
        yield
        return
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=world.rank, world_size=world.size)
    try:
        yield
    finally:
        dist.destroy_process_group()
