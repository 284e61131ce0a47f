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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from diffloss.process import Process

if TYPE_CHECKING:  # diffloss.objective imports diffloss.optimal (for J* tables)
    from diffloss.objective import Objective

FIRST_NODES = 16  # the first rule has FIRST_NODES + 1 nodes
MAX_NODES = 128
CDF_GRID = 8193  # points of the trapezoid rule that gives the density's CDF


@dataclass(frozen=True)
class ObjectiveFloor:
    """The floor ``total`` of an objective's loss with its Monte Carlo ``stderr`` (an upper bound) and the
    estimated ``quadrature_error`` of ``nodes`` + 1 Clenshaw-Curtis nodes."""

    objective: dict[str, Any]
    total: float
    stderr: float
    quadrature_error: float
    nodes: int

    def to_dict(self) -> dict[str, Any]:
        """The ``objective`` entry of ``diffloss optimal-loss --json``."""
        return {
            **self.objective,
            "total": self.total,
            "stderr": self.stderr,
            "quadrature_error": self.quadrature_error,
            "nodes": self.nodes + 1,
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
    """log-SNRs lambda(u) = F^{-1}(u) of the objective's level density (F by a trapezoid rule on p)."""
    lo, hi = objective.density.support(process)
    grid = np.linspace(lo, hi, CDF_GRID)
    p = objective.density.log_prob(torch.from_numpy(grid), process).exp().numpy()
    cdf = np.concatenate([[0.0], np.cumsum((p[1:] + p[:-1]) / 2 * np.diff(grid))])
    return np.interp(u, cdf / cdf[-1], grid)


def x0_weight(objective: Objective, process: Process, lam: np.ndarray) -> np.ndarray:
    """w_x0(lambda) of the objective's weighting (the weight on the x0 MSE)."""
    return objective.weighting.x0_weight(torch.from_numpy(np.asarray(lam, dtype=np.float64)), process).numpy()


def objective_floor(
    objective: Objective,
    process: Process,
    jstar: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    *,
    max_nodes: int = MAX_NODES,
) -> ObjectiveFloor:
    """The floor of ``objective`` under ``process``. ``jstar(sigmas)`` returns (J*_x0, stderr) per dimension at
    noise-to-signal ratios ``sigmas`` (e.g. ``optimal_loss`` of the data; called once per refinement with the new
    nodes only); a table without errors returns zeros as stderr."""
    def integrand(u: np.ndarray) -> np.ndarray:
        lam = density_quantiles(objective, process, u)
        j, se = jstar(np.exp(-lam / 2))
        w = x0_weight(objective, process, lam)
        return np.stack([w * j, np.abs(w) * se], 1)  # (nodes, 2): w_x0 * J*, w_x0 * stderr

    n = FIRST_NODES
    g = integrand(clenshaw_curtis(n)[0])
    while True:
        weights = clenshaw_curtis(n)[1]
        total, stderr = float(weights @ g[:, 0]), float(weights @ g[:, 1])
        error = abs(total - float(clenshaw_curtis(n // 2)[1] @ g[::2, 0]))
        if error <= max(stderr, 1e-12 * abs(total)) or 2 * n > max_nodes:
            return ObjectiveFloor(objective.to_dict(), total, stderr, error, n)
        n *= 2
        finer = np.empty((n + 1, 2))
        finer[::2] = g  # the nested rule: old node j is new node 2 j
        finer[1::2] = integrand(clenshaw_curtis(n)[0][1::2])
        g = finer


def table_jstar(table: tuple[list[float], list[float]]) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``jstar`` for ``objective_floor`` from a J* table (increasing log-SNRs, x0 MSE), stderr 0.

    log J* is interpolated linearly in lambda between positive entries (J* falls exponentially towards small s,
    where a linear interpolation would overshoot by orders of magnitude), J* itself elsewhere. Beyond the
    lowest log-SNR J* is held constant (it tends to the data variance); beyond the highest, log J* is
    extrapolated along the last two entries' slope (J* keeps falling to 0 as s -> 0; holding it would charge
    weights that grow like 1/s^2 with a J* that no longer exists), or 0 if an end entry is 0."""
    lam_t, j_t = (np.asarray(v, dtype=np.float64) for v in table)
    if len(lam_t) < 2:
        raise ValueError("a J* table needs at least two levels")

    def jstar(sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lam = np.maximum(-2 * np.log(sigmas), lam_t[0])
        k = np.clip(np.searchsorted(lam_t, lam, side="right") - 1, 0, len(lam_t) - 2)
        lo, hi = j_t[k], j_t[k + 1]
        f = (lam - lam_t[k]) / (lam_t[k + 1] - lam_t[k])  # > 1 past the last entry: extrapolation
        positive = (lo > 0) & (hi > 0)
        log_lin = np.exp(np.log(np.where(positive, lo, 1.0)) * (1 - f) + np.log(np.where(positive, hi, 1.0)) * f)
        lin = np.where(f <= 1, lo * (1 - f) + hi * f, 0.0)
        out = np.where(positive, log_lin, lin)
        return np.where(f > 1, np.minimum(out, hi), out), np.zeros(len(lam))  # never rising past the end

    return jstar


def data_jstar(data: Any, **settings: Any) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``jstar`` for ``objective_floor`` estimated on ``data`` by ``optimal_loss(data, sigmas, **settings)``."""
    from diffloss.optimal.estimate import optimal_loss

    def jstar(sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = optimal_loss(data, sigmas, **settings)
        return result.x0_mse, result.stderr

    return jstar
