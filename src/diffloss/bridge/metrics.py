"""Sampler metrics: ELBO, log Z estimate, ESS from R; Sinkhorn, MMD and entropic mode coverage from samples.

All take R = log q - log p~ per trajectory (B,), importance weights w = exp(-R).
"""

from __future__ import annotations

import math

import numpy as np
import ot
import torch

SINKHORN_REL_EPS = 0.05


def elbo(R: torch.Tensor) -> float:
    """-mean(R): a lower bound on log Z in expectation."""
    return float(-R.mean())


def log_z_hat(R: torch.Tensor) -> float:
    """logsumexp(-R) - log B: the importance-sampling estimate of log Z (biased low by Jensen, consistent)."""
    return float(torch.logsumexp(-R.double(), 0) - math.log(R.shape[0]))


def ess(R: torch.Tensor) -> float:
    """Normalized effective sample size (sum w)^2 / (B sum w^2) in (0, 1]."""
    lw = -R.double()
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)) / R.shape[0])


def sinkhorn(x: torch.Tensor, y: torch.Tensor, rel_eps: float = SINKHORN_REL_EPS) -> tuple[float, float]:
    """Entropic OT cost <P, C> between the empirical measures of x (n, d) and y (m, d), uniform weights.

    C is the squared Euclidean cost; the entropic regularization is eps = rel_eps * mean(C) (the reference
    benchmark's solver default). Returns (cost, eps) so that eps can be stated with the result. Solved in the log
    domain with POT (``ot.sinkhorn2``, method ``sinkhorn_log``).
    """
    xs, ys = x.detach().double().cpu().numpy(), y.detach().double().cpu().numpy()
    cost = ot.dist(xs, ys, metric="sqeuclidean")
    eps = rel_eps * float(cost.mean())
    a, b = np.full(len(xs), 1.0 / len(xs)), np.full(len(ys), 1.0 / len(ys))
    value = ot.sinkhorn2(a, b, cost, eps, method="sinkhorn_log", numItermax=2000, stopThr=1e-7)
    return float(value), eps


def median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> float:
    """The median heuristic: the median Euclidean distance between distinct points of the pooled sample."""
    z = torch.cat([x, y]).double()
    d = torch.cdist(z, z)
    return float(d[torch.triu(torch.ones_like(d, dtype=torch.bool), 1)].median())


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """MMD with the RBF kernel exp(-|a - b|^2 / (2 h^2)), h = ``bandwidth`` or the median heuristic.

    The biased (V-statistic) estimate sqrt(mean k(x, x') + mean k(y, y') - 2 mean k(x, y)), which is >= 0.
    """
    x, y = x.detach().double(), y.detach().double()
    h = bandwidth if bandwidth is not None else median_bandwidth(x, y)

    def k(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-(torch.cdist(a, b) ** 2) / (2 * h * h)).mean()

    return math.sqrt(max(float(k(x, x) + k(y, y) - 2 * k(x, y)), 0.0))


def emc(x: torch.Tensor, modes: torch.Tensor) -> float:
    """Entropic mode coverage: entropy of the share of samples nearest to each of the K modes, divided by log K.

    1 when the samples are spread equally over all modes, 0 when they all sit at one mode. Samples are assigned
    to the nearest mode (Euclidean), the most likely component for equal-weight, equal-scale mixtures.
    """
    nearest = torch.cdist(x.detach().double(), modes.double()).argmin(1)
    p = torch.bincount(nearest, minlength=len(modes)).double() / len(x)
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(len(modes)))
