"""A network made ready for inference on a device: moved there, optionally compiled, and run under a precision.

Shared by sampling and diagnosis (``diffloss.loader.DiffusionModel.for_inference``) and by the feature classifiers
of ``diffloss eval`` (``diffloss.metrics.fid``). Precision conventions are those of ``diffloss.device``: bf16 runs
the network under bfloat16 autocast and casts its output back to float32, so the caller's arithmetic (a sampler's
state, a metric's features) stays float32; tf32 allows TensorFloat-32 in CUDA matmuls, a process-wide setting.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffloss.device import World, autocast, check_precision, set_matmul_precision

Network = Callable[..., torch.Tensor]


class Autocast(torch.nn.Module):
    """``network`` called under ``diffloss.device.autocast(precision, device)``, its output cast to float32."""

    def __init__(self, network: Network, precision: str, device: torch.device) -> None:
        super().__init__()
        self.network, self.precision, self.autocast_device = network, precision, device

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, self.autocast_device):
            return self.network(*args).float()


def prepare_network(network: Network, device: torch.device, precision: str = "fp32", compile: bool = False) -> Network:
    """``network`` on ``device`` (an ``nn.Module`` moves in place; a plain callable must already run there),
    compiled by ``torch.compile`` with ``compile``, under ``precision``. Raises ``DifflossError`` for a precision the
    device cannot run."""
    check_precision(precision, device)
    set_matmul_precision(precision)
    net = network.to(device) if isinstance(network, torch.nn.Module) else network
    if compile:
        net = torch.compile(net)
    return Autocast(net, precision, device) if precision == "bf16" else net


def network_device(network: Network) -> torch.device:
    """Where a network's parameters are: the CPU for one without any, or for a callable that is no module."""
    params = network.parameters() if isinstance(network, torch.nn.Module) else iter(())
    return next(params, torch.empty(0)).device


def execution_record(device: torch.device | str, precision: str, compile: bool, world: World | None) -> dict:
    """Where and how a report's numbers were computed, for its JSON: ``{"device", "precision", "compile",
    "world_size"}``."""
    return {"device": str(device), "precision": precision, "compile": compile, "world_size": (world or World()).size}
