"""A batch of noise levels, and what a model is told about them.

Levels are float64 tensors of shape (B,) on the CPU: the process time ``t``, the log-SNR ``logsnr`` and, for
levels drawn from the discrete DDPM chain, the 0-based ``timestep``. A model (a ``TargetPredictor``, e.g. a
``diffloss.models.Denoiser``) is conditioned on one of:

- ``t``:        the process time (EDM: t = sigma; flow and VP: t in [0, 1]);
- ``sigma``:    the noise-to-signal ratio s = sigma / alpha (EDM's / k-diffusion's "sigma");
- ``logsnr``:   lambda = log(alpha^2 / sigma^2);
- ``timestep``: the DDPM step n (VP processes only; n = t * T - 1, an integer for discrete levels,
  fractional otherwise, as diffusers' ``UNet2DModel`` accepts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from diffloss.errors import DifflossError, unknown_name
from diffloss.process import Process

CONDITIONS: tuple[str, ...] = ("t", "sigma", "logsnr", "timestep")

TargetPredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A model ``(x_t, c) -> prediction of a target``, x_t of shape (B, ...), c the (B,) level condition."""


@dataclass(frozen=True)
class Levels:
    """Noise levels of a batch: ``t``, ``logsnr`` (B,) float64, and ``timestep`` (B,) int64 or None."""

    t: torch.Tensor
    logsnr: torch.Tensor
    timestep: torch.Tensor | None = None

    @property
    def nsr(self) -> torch.Tensor:
        """s = sigma / alpha = exp(-lambda / 2)."""
        return torch.exp(-self.logsnr / 2)

    @classmethod
    def from_t(cls, process: Process, t: torch.Tensor, timestep: torch.Tensor | None = None) -> Levels:
        return cls(t, process.logsnr(t), timestep)

    @classmethod
    def from_logsnr(cls, process: Process, logsnr: torch.Tensor) -> Levels:
        return cls(process.t_of_logsnr(logsnr), logsnr)


def condition(levels: Levels, process: Process, kind: str = "t") -> torch.Tensor:
    """The (B,) tensor a model conditioned on ``kind`` (one of ``CONDITIONS``) receives."""
    if kind == "t":
        return levels.t
    if kind == "sigma":
        return levels.nsr
    if kind == "logsnr":
        return levels.logsnr
    if kind == "timestep":
        if levels.timestep is not None:
            return levels.timestep
        if not hasattr(process, "timestep_t"):
            raise DifflossError(
                f"a timestep condition needs a DDPM-style process with T steps (vp, vp-cosine); "
                f"process {process.name!r} has none: condition on t, sigma or logsnr instead"
            )
        return levels.t * process.T - 1
    raise unknown_name("model condition", kind, CONDITIONS)


def model_condition(levels: Levels, process: Process, kind: str, like: torch.Tensor) -> torch.Tensor:
    """``condition`` on the device of ``like``, in its dtype (integer timesteps stay int64)."""
    c = condition(levels, process, kind).to(like.device)
    return c.to(like.dtype) if c.is_floating_point() else c


def snap_to_steps(process: Process, sigmas: np.ndarray) -> Levels:
    """Levels at the discrete training steps nearest (in log s) to ``sigmas``, duplicates dropped; the
    process must have ``T`` steps (``discrete`` VP)."""
    steps = torch.arange(process.T)
    s_steps = process.nsr(process.timestep_t(steps)).numpy()
    n = np.unique(np.abs(np.log(s_steps)[None, :] - np.log(np.asarray(sigmas))[:, None]).argmin(1))
    n = torch.from_numpy(n)
    return Levels.from_t(process, process.timestep_t(n), n)
