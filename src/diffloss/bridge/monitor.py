"""Watching a bridge-sampler run: the "exploded" test on its evaluations and the SDE state logged beside them.

A run has *exploded* when an evaluated ELBO (nats) falls more than ``collapse_margin(best)`` below the best ELBO the
run has evaluated so far: max(``COLLAPSE_NATS``, ``COLLAPSE_FACTOR`` * |best|), i.e. 1000 nats or the best ELBO's
own size, whichever is larger. A healthy run's evaluations scatter by a few nats around a rising curve; an Euler
scheme that blew up loses orders of magnitude (German Credit CMCD x LV: -700 -> -4e13). A non-finite ELBO counts as
exploded too. The reference (sebaleh87/dds_optim) reports such runs at their best checkpoint, as
``diffloss.bridge.train`` does with ``best.safetensors``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from diffloss.bridge.samplers import BridgeSampler

COLLAPSE_NATS = 1000.0
COLLAPSE_FACTOR = 1.0
BETA_GRID = 8  # the CMCD schedule is logged at t = j / BETA_GRID, j = 0..BETA_GRID


def collapse_margin(best: float) -> float:
    """How far (nats) an evaluated ELBO may fall below the run's best one before the run counts as exploded."""
    return max(COLLAPSE_NATS, COLLAPSE_FACTOR * abs(best))


def elbo_collapsed(elbo: float | None, best: float | None) -> bool:
    """Whether ``elbo`` (None: non-finite) lies more than ``collapse_margin(best)`` below ``best`` (None: no
    evaluation yet, never collapsed unless ``elbo`` itself is non-finite)."""
    if elbo is None or not math.isfinite(elbo):
        return True
    return best is not None and elbo < best - collapse_margin(best)


def sde_state(model: BridgeSampler) -> dict[str, Any]:
    """The learned SDE parameters in a few numbers: the diffusion coefficient sigma (min, mean, max over the
    dimensions), CMCD's Langevin step sigma^2 / (2K) at the mean sigma, and CMCD's annealing schedule beta at
    t = j / ``BETA_GRID``."""
    with torch.no_grad():
        sigma = torch.exp(model.log_sigma)
        out: dict[str, Any] = {
            "sigma_min": float(sigma.min()),
            "sigma_mean": float(sigma.mean()),
            "sigma_max": float(sigma.max()),
        }
        if model.cfg.sampler == "cmcd":
            K = model.steps
            out["langevin_step"] = float(sigma.mean()) ** 2 / (2 * K)
            betas = model.betas()
            out["beta"] = [float(betas[round(j * K / BETA_GRID)]) for j in range(BETA_GRID + 1)]
    return out


__all__ = ["BETA_GRID", "COLLAPSE_FACTOR", "COLLAPSE_NATS", "collapse_margin", "elbo_collapsed", "sde_state"]
