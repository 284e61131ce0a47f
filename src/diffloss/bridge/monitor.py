"""Watching a bridge-sampler run: the two "exploded" tests on its evaluations and the SDE state logged beside them.

1. *ELBO collapse*: an evaluated ELBO (nats) falls more than ``collapse_margin(best)`` below the best ELBO the run
   has evaluated so far: max(``COLLAPSE_NATS``, ``COLLAPSE_FACTOR`` * |best|), i.e. 1000 nats or the best ELBO's own
   size, whichever is larger. A healthy run's evaluations scatter by a few nats around a rising curve; an Euler
   scheme that blew up loses orders of magnitude (German Credit CMCD x LV: -700 -> -4e13). A non-finite ELBO counts
   as collapsed too.
2. *Unstable step* (CMCD): the Langevin step beyond the explicit Euler scheme's stability bound at the current sigma.
   CMCD moves x by s_i * beta * (grad log p~ - grad log p_0)_i per step, s_i = sigma_i^2 / (2K), on top of the exact
   OU step of the prior (``diffloss.bridge.samplers``). Linearised at x, with H = -grad^2 log p~(x) and S = diag(s),
   the map multiplies a perturbation by about I - S^(1/2) (beta H + (1 - beta) / s_0^2) S^(1/2), which stays a
   contraction only while every eigenvalue of the bracket times the step is below 2: the bound is
   lambda_max(S^(1/2) H S^(1/2)) < ``EULER_LIMIT`` = 2 at beta = 1 (the prior's own part is exact). ``euler_curvature``
   estimates that largest eigenvalue by power iteration with Hessian-vector products at final states of the sampler
   (``CURVATURE_SAMPLES`` of them; the median over them of each state's Rayleigh quotient, so the test fires when the
   step is beyond the bound at half the states or more: a blow-up of the whole scheme, not a few states in a stiff
   corner such as the Funnel's neck, whose local instability limits itself). What the bound leaves out: the
   learned control, whose score gate can lengthen or shorten the step (the ELBO test catches what that breaks), and
   negative curvature (growth the SDE itself has, not the scheme's). DIS and DBS have no Langevin term: no test.

The reference (sebaleh87/dds_optim) reports exploded runs at their best checkpoint, as ``diffloss.bridge.train``
does with ``best.safetensors``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from diffloss.bridge.samplers import BridgeSampler, simulate
from diffloss.bridge.targets import SamplingTarget

COLLAPSE_NATS = 1000.0
COLLAPSE_FACTOR = 1.0
BETA_GRID = 8  # the CMCD schedule is logged at t = j / BETA_GRID, j = 0..BETA_GRID
EULER_LIMIT = 2.0  # explicit Euler on curvature lambda with step s is stable iff s * lambda < 2
CURVATURE_SAMPLES = 64  # final states at which the step's curvature is estimated
POWER_ITERATIONS = 30


def collapse_margin(best: float) -> float:
    """How far (nats) an evaluated ELBO may fall below the run's best one before the run counts as exploded."""
    return max(COLLAPSE_NATS, COLLAPSE_FACTOR * abs(best))


def elbo_collapsed(elbo: float | None, best: float | None) -> bool:
    """Whether ``elbo`` (None: non-finite) lies more than ``collapse_margin(best)`` below ``best`` (None: no
    evaluation yet, never collapsed unless ``elbo`` itself is non-finite)."""
    if elbo is None or not math.isfinite(elbo):
        return True
    return best is not None and elbo < best - collapse_margin(best)


def euler_curvature(model: BridgeSampler, target: SamplingTarget, generator: torch.Generator) -> float | None:
    """lambda_max(S^(1/2) H S^(1/2)) (module docstring, 2.), its median over ``CURVATURE_SAMPLES`` final states
    drawn with ``generator``: the step times the target's curvature, dimensionless; ``EULER_LIMIT`` = 2 is the
    stability bound. None for DIS/DBS (no Langevin step) and when the states or the estimate are not finite."""
    if model.cfg.sampler != "cmcd":
        return None
    with torch.no_grad():
        x = simulate(model, target, CURVATURE_SAMPLES, generator, detach_path=True).x
        root_step = torch.exp(model.log_sigma) / (2 * model.steps) ** 0.5  # S^(1/2)
    if not bool(torch.isfinite(x).all()):
        return None
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        score = target.score(x, create_graph=True)

        def apply(v: torch.Tensor) -> torch.Tensor:  # S^(1/2) H S^(1/2) v, per state
            (hv,) = torch.autograd.grad(score, x, grad_outputs=-root_step * v, retain_graph=True)
            return root_step * hv

        v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        for _ in range(POWER_ITERATIONS):
            v = apply(v / v.norm(dim=1, keepdim=True))
        v = v / v.norm(dim=1, keepdim=True)
        rayleigh = (v * apply(v)).sum(1)
    lam = float(rayleigh.median().clamp(min=0.0))
    return lam if math.isfinite(lam) else None


def euler_unstable(curvature: float | None) -> bool:
    """Whether the Langevin step times the curvature (``euler_curvature``; None: not estimated) reached the bound."""
    return curvature is not None and curvature >= EULER_LIMIT


EXPLOSIONS = {
    "elbo collapse": "the evaluated ELBO collapsed",
    "unstable step": f"the Langevin step times the curvature reached the Euler stability bound {EULER_LIMIT:g}",
}


def exploded(row: dict[str, Any], best: float | None) -> str | None:
    """Why the evaluation ``row`` (its "elbo" and "euler_curvature") counts as exploded against the run's best ELBO
    ``best`` ("elbo collapse" or "unstable step", keys of ``EXPLOSIONS``), or None."""
    if elbo_collapsed(row["elbo"], best):
        return "elbo collapse"
    return "unstable step" if euler_unstable(row.get("euler_curvature")) else None


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


__all__ = [
    "BETA_GRID",
    "COLLAPSE_FACTOR",
    "COLLAPSE_NATS",
    "CURVATURE_SAMPLES",
    "EULER_LIMIT",
    "EXPLOSIONS",
    "collapse_margin",
    "elbo_collapsed",
    "euler_curvature",
    "euler_unstable",
    "exploded",
    "sde_state",
]
