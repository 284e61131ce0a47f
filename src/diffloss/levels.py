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

import math
from collections.abc import Callable, Sequence
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

    def select(self, index: slice | torch.Tensor) -> Levels:
        """The levels of the batch entries ``index`` (a slice or an index tensor)."""
        return Levels(self.t[index], self.logsnr[index], None if self.timestep is None else self.timestep[index])

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


def model_condition(
    levels: Levels, process: Process, kind: str, like: torch.Tensor, *, host: bool = False
) -> torch.Tensor:
    """``condition`` in the dtype of ``like`` (integer timesteps stay int64), on like's device, or with ``host`` on
    the CPU, where the levels are (for a network that computes from the condition on the host, as ``Denoiser``
    does, and moves what it needs to the device itself). The copy to the device does not block the host."""
    c = condition(levels, process, kind)
    c = c if host else c.to(like.device, non_blocking=True)
    return c.to(like.dtype) if c.is_floating_point() else c


NSR_RANGE = (0.002, 80.0)
"""The default range of noise-to-signal ratios s = sigma / alpha: EDM's sigma range."""


def log_spaced(k: int, lo: float = NSR_RANGE[0], hi: float = NSR_RANGE[1]) -> list[float]:
    """``k`` log-spaced values from ``lo`` to ``hi`` (both > 0); ``k = 1`` gives their geometric mean."""
    if k < 1:
        raise DifflossError(f"the number of levels must be >= 1, got {k}")
    if k == 1:
        return [math.sqrt(lo * hi)]
    return [math.exp(math.log(lo) + i * (math.log(hi) - math.log(lo)) / (k - 1)) for i in range(k)]


def nsr_levels(
    process: Process,
    *,
    sigmas: Sequence[float] | None = None,
    times: Sequence[float] | None = None,
    logsnr: Sequence[float] | None = None,
    count: int | None = None,
) -> np.ndarray:
    """Noise-to-signal ratios s (L,) from exactly one of: ``sigmas`` (any s > 0), ``logsnr`` (any finite lambda;
    s = exp(-lambda / 2)), ``times`` (process times, which must lie in the process's time range and map to
    0 < s < inf) or ``count`` log-spaced levels over ``NSR_RANGE`` (the default: 32). Levels outside the range
    the process reaches are allowed: a level is a property of the data's posterior, the process only maps
    times to levels."""
    given = [k for k, v in (("sigmas", sigmas), ("t", times), ("logsnr", logsnr), ("levels", count)) if v is not None]
    if len(given) > 1:
        raise DifflossError(f"give only one of --sigmas, --t, --logsnr and --levels (got {' and '.join(given)})")
    if times is not None:
        t = np.asarray(times, dtype=np.float64)
        bad = t[~((t >= process.t_min) & (t <= process.t_max))]
        if len(bad):
            raise DifflossError(
                f"--t: {bad[0]:g} is outside the time range [{process.t_min:g}, {process.t_max:g}] of {process.name}"
            )
        s = process.nsr(t).numpy()
        bad = t[~(np.isfinite(s) & (s > 0))]
        if len(bad):
            raise DifflossError(f"--t: at t = {bad[0]:g} the {process.name} process has s = σ/α = 0 or ∞; move inside")
        return s
    if logsnr is not None:
        lam = np.asarray(logsnr, dtype=np.float64)
        s = np.exp(-lam / 2)
        bad = lam[~(np.isfinite(s) & (s > 0))]
        if len(bad):
            raise DifflossError(f"--logsnr: {bad[0]:g} gives s = exp(-λ/2) = 0 or ∞ in float64; pick |λ| <= 460")
        return s
    if sigmas is not None:
        s = np.asarray(sigmas, dtype=np.float64)
        if not (np.isfinite(s) & (s > 0)).all():
            raise DifflossError(f"--sigmas: noise-to-signal ratios must be finite and > 0, got {s.tolist()}")
        return s
    return np.asarray(log_spaced(32 if count is None else count))


def snap_to_steps(process: Process, sigmas: np.ndarray) -> Levels:
    """Levels at the discrete training steps nearest (in log s) to ``sigmas``, duplicates dropped; the
    process must have ``T`` steps (``discrete`` VP)."""
    steps = torch.arange(process.T)
    s_steps = process.nsr(process.timestep_t(steps)).numpy()
    n = np.unique(np.abs(np.log(s_steps)[None, :] - np.log(np.asarray(sigmas))[:, None]).argmin(1))
    n = torch.from_numpy(n)
    return Levels.from_t(process, process.timestep_t(n), n)
