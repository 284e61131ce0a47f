"""Power-law fits of a loss against training compute: J(F) = beta * F^alpha (+ c).

Conventions: F > 0 (FLOPs or any compute unit) and J > 0 are 1-d arrays of equal length n >= 3; alpha is the
exponent (negative for a loss that falls with compute). Every fit reports

- ``rho``: the Pearson correlation of (log F, log(J - c)) (c = 0 for the pure power law): the paper's
  "log-log correlation" (Xu et al., arXiv 2506.13763), negative for a falling loss;
- ``r2``: 1 - SS_res / SS_tot of log J, the coefficient of determination on the log scale (where a pure
  power law is a line).

``log_log_fit`` is ordinary least squares of log J on log F (so r2 = rho^2 exactly). ``offset_fit`` fits
J = beta F^alpha + c with c free in [0, min J) by nonlinear least squares on log J (relative errors: every
point counts alike whatever its size), and its r2 is that of log J. ``frontier`` picks the compute-efficient
frontier of a cloud of (F, J) points; ``extrapolate`` evaluates a fit at new compute.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from diffloss.errors import DifflossError


@dataclass(frozen=True)
class PowerLawFit:
    """J(F) = beta * F^alpha + c, fitted on ``n`` points; ``rho`` and ``r2`` as in the module docstring."""

    beta: float
    alpha: float
    c: float
    rho: float
    r2: float
    n: int


def _check(f: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f, j = np.asarray(f, dtype=np.float64), np.asarray(j, dtype=np.float64)
    if f.ndim != 1 or f.shape != j.shape:
        raise DifflossError(f"F and J must be 1-d arrays of equal length, got shapes {f.shape} and {j.shape}")
    if len(f) < 3:
        raise DifflossError(f"a power-law fit needs at least 3 points, got {len(f)}; diagnose more checkpoints")
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(j)) and np.all(f > 0) and np.all(j > 0)):
        raise DifflossError("F and J must be finite and > 0 for a log-log fit; drop the points that are not")
    if np.ptp(np.log(f)) == 0:
        raise DifflossError("all points have the same compute F; a power law in F needs at least two values")
    return f, j


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else math.nan


def log_log_fit(f: np.ndarray, j: np.ndarray) -> PowerLawFit:
    """J = beta * F^alpha by least squares of log J on log F; c = 0."""
    f, j = _check(f, j)
    x, y = np.log(f), np.log(j)
    alpha, log_beta = np.polyfit(x, y, 1)
    rho = float(np.corrcoef(x, y)[0, 1]) if np.ptp(y) > 0 else math.nan
    return PowerLawFit(float(np.exp(log_beta)), float(alpha), 0.0, rho, _r2(y, log_beta + alpha * x), len(f))


def offset_fit(f: np.ndarray, j: np.ndarray) -> PowerLawFit:
    """J = beta * F^alpha + c with c free in [0, min J): least squares of log J (``scipy.optimize.curve_fit``
    over (log beta', alpha, c) with F scaled by its geometric mean for conditioning), started from the
    pure power law fitted to J - min(J)/2."""
    from scipy.optimize import OptimizeWarning, curve_fit

    f, j = _check(f, j)
    f0 = float(np.exp(np.log(f).mean()))
    x = np.log(f / f0)
    c_hi = float(j.min()) * (1 - 1e-9)

    def model(x, log_b, alpha, c):
        return np.log(np.exp(log_b + alpha * x) + c)

    start = log_log_fit(f / f0, j - j.min() / 2)
    p0 = [math.log(start.beta), start.alpha, j.min() / 2]
    try:
        with warnings.catch_warnings():  # an exact fit has no covariance estimate; only the optimum is used
            warnings.simplefilter("ignore", OptimizeWarning)
            (log_b, alpha, c), _ = curve_fit(
                model, x, np.log(j), p0=p0, bounds=([-np.inf, -np.inf, 0.0], [np.inf, np.inf, c_hi]), maxfev=20000
            )
    except RuntimeError as e:
        raise DifflossError(f"the offset power-law fit did not converge ({e}); use log_log_fit") from None
    y = np.log(j - c)
    rho = float(np.corrcoef(x, y)[0, 1]) if np.ptp(y) > 0 else math.nan
    beta = math.exp(log_b - alpha * math.log(f0))
    return PowerLawFit(beta, float(alpha), float(c), rho, _r2(np.log(j), model(x, log_b, alpha, c)), len(f))


def extrapolate(fit: PowerLawFit, f: float | np.ndarray) -> float | np.ndarray:
    """The fit's J at compute ``f``: beta * f^alpha + c."""
    return fit.beta * np.asarray(f, dtype=np.float64) ** fit.alpha + fit.c


def frontier(f: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Indices (in increasing F) of the compute-efficient frontier: the points whose J is lower than that of
    every point with less or equal compute (ties in F: the lowest J; equal J: the first in F)."""
    f, j = np.asarray(f, dtype=np.float64), np.asarray(j, dtype=np.float64)
    order = np.lexsort((j, f))
    keep, best = [], math.inf
    for i in order:
        if j[i] < best:
            keep.append(int(i))
            best = j[i]
    return np.asarray(keep, dtype=np.int64)
