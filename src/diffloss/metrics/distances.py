"""Sample-based distances between two point clouds: entropic optimal transport (Sinkhorn, via POT) and the
maximum mean discrepancy (MMD) with an RBF kernel.

Both take ``x`` of shape (N, D) and ``y`` of shape (M, D) (numpy or torch, any float dtype; computed in
float64) and treat them as uniform empirical measures. Distances are in the units of the data: the Sinkhorn
cost is in squared data units (squared-Euclidean ground cost, no 1/2 and no division by D).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from diffloss.errors import DifflossError

MEDIAN_POINTS = 1000  # the median heuristic looks at (at most) this many pooled points
BLOCK = 2048  # rows per block when summing kernel matrices


def _as_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise DifflossError(f"point clouds must be (N, D) and (M, D) with the same D; got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise DifflossError(f"need at least 2 points on each side; got {len(x)} and {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DifflossError("point clouds contain NaN or inf; remove those samples")
    return x, y


def _check_epsilon(epsilon: float) -> None:
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise DifflossError(f"Sinkhorn epsilon must be a finite number > 0, got {epsilon}")


def sq_dists(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances (N, M), float64, clipped at 0."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.maximum(d, 0.0)


def entropic_ot(x, y, *, epsilon: float, max_iter: int = 2000, tol: float = 1e-7) -> float:
    """The entropic optimal-transport cost OT_eps(x, y) between uniform empirical measures.

    OT_eps = min_pi <pi, C> + eps * KL(pi || a b^T) over couplings pi of a = 1/N and b = 1/M, with ground cost
    C_ij = ||x_i - y_j||^2 (squared Euclidean). ``epsilon`` is absolute, in the units of C. As eps -> 0,
    OT_eps decreases to the exact squared 2-Wasserstein cost W_2^2, and W_2^2 <= OT_eps <= W_2^2 + eps*log N
    for N = M. Solved by POT's log-domain Sinkhorn (``tol`` on the marginal error, at most ``max_iter``
    iterations; POT warns if that is not enough).
    """
    import ot

    x, y = _as_pair(x, y)
    _check_epsilon(epsilon)
    cost = torch.from_numpy(sq_dists(x, y))
    a = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64)
    b = torch.full((len(y),), 1.0 / len(y), dtype=torch.float64)
    plan = ot.sinkhorn(a, b, cost, epsilon, method="sinkhorn_log", numItermax=max_iter, stopThr=tol)
    ratio = plan / (a[:, None] * b[None, :])
    kl = torch.where(plan > 0, plan * torch.log(torch.where(plan > 0, ratio, 1.0)), 0.0).sum()
    return float((plan * cost).sum() + epsilon * kl)


def self_entropic_ot(x, *, epsilon: float, max_iter: int = 2000, tol: float = 1e-7) -> float:
    """OT_eps(x, x) (same conventions as ``entropic_ot``) by the symmetric Sinkhorn iteration of Feydy et al.
    (2019): f <- (f + T(f)) / 2 with T(f)_i = -eps log sum_j a_j exp((f_j - C_ij) / eps), then OT_eps = 2 <a, f>.

    The plain alternating iteration oscillates on symmetric problems and needs thousands of steps; the averaged
    one converges in tens. Stops when max |change of f| <= tol * eps (warns if ``max_iter`` is not enough).
    """
    x, _ = _as_pair(x, x)
    _check_epsilon(epsilon)
    cost = torch.from_numpy(sq_dists(x, x))
    log_a = -math.log(len(x))
    f = torch.zeros(len(x), dtype=torch.float64)
    for _ in range(max_iter):
        new = 0.5 * (f - epsilon * torch.logsumexp(log_a + (f[None, :] - cost) / epsilon, dim=1))
        done = float((new - f).abs().max()) <= tol * epsilon
        f = new
        if done:
            break
    else:
        warnings.warn(f"symmetric Sinkhorn did not converge in {max_iter} iterations; raise epsilon", stacklevel=2)
    return 2.0 * float(f.mean())


def sinkhorn(x, y, *, epsilon: float, debiased: bool = True, max_iter: int = 2000, tol: float = 1e-7) -> float:
    """Sinkhorn distance between two point clouds (squared-Euclidean cost, absolute ``epsilon``).

    With ``debiased=True`` (default) this is the Sinkhorn divergence of Genevay et al. / Feydy et al.,
    S_eps = OT_eps(x, y) - OT_eps(x, x)/2 - OT_eps(y, y)/2, which is >= 0, is 0 for identical clouds, tends
    to W_2^2 as eps -> 0 and to ||mean(x) - mean(y)||^2 as eps -> infinity. With ``debiased=False`` it is the
    entropic OT cost OT_eps(x, y) itself (see ``entropic_ot``), which is > 0 even for identical clouds.
    Units: squared data units (no square root is taken).
    """
    xy = entropic_ot(x, y, epsilon=epsilon, max_iter=max_iter, tol=tol)
    if not debiased:
        return xy
    xx = self_entropic_ot(x, epsilon=epsilon, max_iter=max_iter, tol=tol)
    yy = self_entropic_ot(y, epsilon=epsilon, max_iter=max_iter, tol=tol)
    return xy - 0.5 * (xx + yy)


def median_bandwidth(x, y, *, max_points: int = MEDIAN_POINTS, seed: int = 0) -> float:
    """The median heuristic: the median Euclidean distance between distinct points of the pooled sample.

    If the pooled sample has more than ``max_points`` rows, a seeded random subset of that size is used.
    """
    x, y = _as_pair(x, y)
    z = np.concatenate([x, y])
    if len(z) > max_points:
        z = z[np.random.default_rng(seed).choice(len(z), max_points, replace=False)]
    d2 = sq_dists(z, z)[np.triu_indices(len(z), 1)]
    h = float(np.median(np.sqrt(d2)))
    if h == 0.0:
        raise DifflossError("the median pairwise distance is 0 (mostly repeated points); give a bandwidth")
    return h


def _kernel_sum(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Sum over all pairs of k(x_i, y_j) = exp(-||x_i - y_j||^2 / (2 h^2)), in row blocks."""
    return sum(
        float(np.exp(-sq_dists(x[i : i + BLOCK], y) / (2 * bandwidth**2)).sum()) for i in range(0, len(x), BLOCK)
    )


@dataclass(frozen=True)
class MMDResult:
    """``mmd2``: the unbiased estimate of MMD^2 (may be slightly negative when the distributions agree);
    ``mmd``: sqrt(max(mmd2, 0)), in data units; ``bandwidth``: the RBF length scale h used."""

    mmd2: float
    mmd: float
    bandwidth: float


def mmd(x, y, *, bandwidth: float | None = None) -> MMDResult:
    """Maximum mean discrepancy with the RBF kernel k(a, b) = exp(-||a - b||^2 / (2 h^2)).

    ``bandwidth`` h defaults to the median heuristic (``median_bandwidth``). MMD^2 is the unbiased
    U-statistic: mean of k(x_i, x_j) over i != j, plus the same for y, minus twice the mean of k(x_i, y_j) over
    all pairs (Gretton et al. 2012, eq. 3). Its square root is reported as sqrt(max(MMD^2, 0)).
    """
    x, y = _as_pair(x, y)
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not (h > 0 and math.isfinite(h)):
        raise DifflossError(f"MMD bandwidth must be a finite number > 0, got {bandwidth}")
    n, m = len(x), len(y)
    kxx = (_kernel_sum(x, x, h) - n) / (n * (n - 1))
    kyy = (_kernel_sum(y, y, h) - m) / (m * (m - 1))
    kxy = _kernel_sum(x, y, h) / (n * m)
    mmd2 = kxx + kyy - 2 * kxy
    return MMDResult(mmd2=mmd2, mmd=math.sqrt(max(mmd2, 0.0)), bandwidth=h)
