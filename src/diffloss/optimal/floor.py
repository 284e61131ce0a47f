"""The optimal loss of a training objective: the floor under the loss that ``diffloss train`` logs.

For an objective (target, weighting w, level density p; ``diffloss.objective``) the expected per-sample loss of
the Bayes-optimal model is

    total = E_{lambda ~ p}[w_target(lambda) * J*_target(lambda)] = int p(lambda) w_x0(lambda) J*_x0(lambda) dlambda

(the target's loss factor cancels). We integrate in the density's own coordinate u = F(lambda) in [0, 1] (F its
CDF, from a fine trapezoid rule on p): total = integral_0^1 w_x0(lambda(u)) J*_x0(lambda(u)) du, a smooth
integrand, by Clenshaw-Curtis quadrature. Its nodes are nested (the n-point rule's nodes are every other node of
the 2n-point rule), so the rule with half the nodes comes for free; |Q_n - Q_{n/2}| estimates the quadrature
error, and n is doubled (computing J* only at the new nodes) until that estimate is below the Monte Carlo
standard error of the total, or n reaches ``MAX_NODES``. The standard error of the total is sum_k W_k w_k se_k,
an upper bound (the levels share their Monte Carlo draws, so their errors are correlated; the std of a sum is
at most the sum of the stds). For a density of discrete steps (DDPM's uniform-t with ``discrete``), the
integral is its continuous limit (error O(1/T)). An adaptive density is integrated at its current state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.interpolate import PchipInterpolator

from diffloss.process import Process

if TYPE_CHECKING:  # diffloss.objective imports diffloss.optimal (for J* tables)
    from diffloss.objective import Objective

FIRST_NODES = 16  # the first rule has FIRST_NODES + 1 nodes
MAX_NODES = 128
CDF_GRID = 8193  # points of the trapezoid rule that gives the density's CDF
TAIL_SAMPLES = 2**17  # draws that bound an infinite end of a density's support


JStar = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""``jstar(sigmas) -> (J*_x0, stderr, upper95)`` per dimension at noise-to-signal ratios ``sigmas``; upper95 is NaN
except where the estimate is 0 +- 0 (the rare-event regime, see ``OptimalLossResult.upper95``)."""


@dataclass(frozen=True)
class ObjectiveFloor:
    """The floor ``total`` of an objective's loss, its Monte Carlo ``stderr`` (an upper bound: the levels share
    their draws), the estimated ``quadrature_error`` on ``nodes`` Clenshaw-Curtis nodes (``converged``: below the
    stderr before ``MAX_NODES``) and ``rare_event_bound``, the most the nodes whose J* estimate is 0 +- 0 can add
    (their 95% upper bounds, weighted like the total): the floor lies in [total, total + rare_event_bound] up to
    the Monte Carlo and quadrature errors."""

    objective: dict[str, Any]
    total: float
    stderr: float
    quadrature_error: float
    nodes: int
    converged: bool
    rare_event_bound: float

    def to_dict(self) -> dict[str, Any]:
        """The ``objective`` entry of ``diffloss optimal-loss --json``."""
        return {
            **self.objective,
            "total": self.total,
            "stderr": self.stderr,
            "rare_event_bound": self.rare_event_bound,
            "quadrature_error": self.quadrature_error,
            "nodes": self.nodes,
            "converged": self.converged,
            "units": "the per-sample loss diffloss train logs (weighted per-dimension MSE of the target)",
        }


def clenshaw_curtis(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes u_j = (1 - cos(pi j / n)) / 2, j = 0..n, on [0, 1] and weights (summing to 1) of the
    Clenshaw-Curtis rule (``n`` even); exact for polynomials of degree <= n."""
    if n < 2 or n % 2:
        raise ValueError(f"Clenshaw-Curtis needs an even n >= 2, got {n}")
    j = np.arange(n + 1)
    k = np.arange(1, n // 2 + 1)
    b = np.where(k == n // 2, 1.0, 2.0)
    c = np.where((j == 0) | (j == n), 1.0, 2.0)
    w = c / n * (1 - (b / (4 * k**2 - 1) * np.cos(2 * np.pi * np.outer(j, k) / n)).sum(1))
    return (1 - np.cos(np.pi * j / n)) / 2, w / 2


def density_quantiles(objective: Objective, process: Process, u: np.ndarray) -> np.ndarray:
    """log-SNRs lambda(u) = F^{-1}(u) of the objective's level density (F by a trapezoid rule on p).

    An infinite end of the support (a normal density of lambda on a process that reaches lambda = +-inf, e.g.
    logit-normal on flow) is replaced by the extreme of ``TAIL_SAMPLES`` draws from the density (seeded, so the
    floor is deterministic): the mass left out is about 1 / TAIL_SAMPLES on that side."""
    density = objective.density
    lo, hi = density.support(process)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        drawn = density.sample(TAIL_SAMPLES, torch.Generator().manual_seed(0), process).logsnr
        drawn = drawn[torch.isfinite(drawn)]
        lo = lo if math.isfinite(lo) else float(drawn.min())
        hi = hi if math.isfinite(hi) else float(drawn.max())
    grid = np.linspace(lo, hi, CDF_GRID)
    p = density.log_prob(torch.from_numpy(grid), process).exp().numpy()
    cdf = np.concatenate([[0.0], np.cumsum((p[1:] + p[:-1]) / 2 * np.diff(grid))])
    return np.interp(u, cdf / cdf[-1], grid)


def x0_weight(objective: Objective, process: Process, lam: np.ndarray) -> np.ndarray:
    """w_x0(lambda) of the objective's weighting (the weight on the x0 MSE)."""
    return objective.weighting.x0_weight(torch.from_numpy(np.asarray(lam, dtype=np.float64)), process).numpy()


def objective_floor(
    objective: Objective, process: Process, jstar: JStar, *, max_nodes: int = MAX_NODES
) -> ObjectiveFloor:
    """The floor of ``objective`` under ``process`` from ``jstar`` (``data_jstar``: estimated on the data, called
    once per refinement with the new nodes only; ``table_jstar``: from a J* table)."""

    def integrand(u: np.ndarray) -> np.ndarray:
        lam = density_quantiles(objective, process, u)
        j, se, upper = jstar(np.exp(-lam / 2))
        w = np.abs(x0_weight(objective, process, lam))
        return np.stack([w * j, w * se, np.where(np.isfinite(upper), w * upper, 0.0)], 1)

    n = FIRST_NODES
    g = integrand(clenshaw_curtis(n)[0])  # (n + 1, 3): w_x0 J*, w_x0 stderr, w_x0 upper95 (rare-event nodes)
    while True:
        weights = clenshaw_curtis(n)[1]
        total, stderr, rare = (float(v) for v in weights @ g)
        error = abs(total - float(clenshaw_curtis(n // 2)[1] @ g[::2, 0]))
        converged = error <= max(stderr, 1e-12 * abs(total))
        if converged or 2 * n > max_nodes:
            return ObjectiveFloor(objective.to_dict(), total, stderr, error, n + 1, converged, rare)
        n *= 2
        finer = np.empty((n + 1, 3))
        finer[::2] = g  # the nested rule: old node j is new node 2 j
        finer[1::2] = integrand(clenshaw_curtis(n)[0][1::2])
        g = finer


def table_jstar(table: tuple[list[float], list[float]]) -> JStar:
    """``jstar`` for ``objective_floor`` from a J* table (increasing log-SNRs, x0 MSE), stderr 0, no bounds.

    Between positive entries log J* is interpolated by a monotone cubic (PCHIP) in lambda: J* falls exponentially
    towards small s and log J* is concave there, so linear interpolation of J* overshoots by orders of magnitude
    and linear interpolation of log J* undershoots by a few percent. Next to a zero entry J* is interpolated
    linearly. Beyond the lowest log-SNR J* is held (it tends to the data variance); beyond the highest, log J* is
    extrapolated along the last two entries' slope, never rising (J* keeps falling to 0 as s -> 0), or is 0 if an
    end entry is 0."""
    lam_t, j_t = (np.asarray(v, dtype=np.float64) for v in table)
    if len(lam_t) < 2:
        raise ValueError("a J* table needs at least two levels")
    pos = j_t > 0
    curve = PchipInterpolator(lam_t[pos], np.log(j_t[pos]), extrapolate=False) if pos.sum() >= 2 else None
    slope = np.log(j_t[-1] / j_t[-2]) / (lam_t[-1] - lam_t[-2]) if pos[-2:].all() else -np.inf

    def jstar(sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lam = np.maximum(-2 * np.log(sigmas), lam_t[0])
        out = np.interp(lam, lam_t, j_t)
        if curve is not None:
            k = np.clip(np.searchsorted(lam_t, lam, side="right") - 1, 0, len(lam_t) - 2)
            smooth = pos[k] & pos[k + 1] & (lam <= lam_t[-1])
            out[smooth] = np.exp(curve(lam[smooth]))
        beyond = lam > lam_t[-1]
        out[beyond] = j_t[-1] * np.exp(min(slope, 0.0) * (lam[beyond] - lam_t[-1])) if pos[-1] else 0.0
        return out, np.zeros(len(lam)), np.full(len(lam), math.nan)

    return jstar


def data_jstar(data: Any, **settings: Any) -> JStar:
    """``jstar`` for ``objective_floor`` estimated on ``data`` by ``optimal_loss(data, sigmas, **settings)``."""
    from diffloss.optimal.estimate import optimal_loss

    def jstar(sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r = optimal_loss(data, sigmas, **settings)
        return r.x0_mse, r.stderr, r.upper95 if r.upper95 is not None else np.full(len(sigmas), math.nan)

    return jstar
