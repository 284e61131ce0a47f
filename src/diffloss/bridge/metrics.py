"""Sampler metrics: ELBO, log Z estimate, ESS from R; Sinkhorn, MMD and entropic mode coverage from samples
(Sinkhorn and MMD are the project-wide ``diffloss.metrics.distances``, with the benchmark's relative eps).

All take R = log q - log p~ per trajectory (B,), importance weights w = exp(-R).
"""

from __future__ import annotations

import math

import torch

from diffloss.metrics import distances

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
    """The Sinkhorn divergence S_eps(x, y) (squared-Euclidean cost, squared units; ``diffloss.metrics.distances``)
    between the samples x (n, d) and y (m, d), with eps = rel_eps * mean(C) over the pairs of x and y (the
    reference benchmark's relative default). Returns (divergence, eps) so that eps can be stated with the result."""
    xs, ys = x.detach().double().cpu(), y.detach().double().cpu()
    mean_cost = (xs**2).sum(1).mean() + (ys**2).sum(1).mean() - 2 * xs.mean(0) @ ys.mean(0)  # mean ||x_i - y_j||^2
    eps = rel_eps * float(mean_cost)
    return distances.sinkhorn(xs, ys, epsilon=eps), eps


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """MMD (RBF kernel, median-heuristic bandwidth unless given): sqrt(max(unbiased MMD^2, 0)) of
    ``diffloss.metrics.distances.mmd``, in the samples' units."""
    return distances.mmd(x, y, bandwidth=bandwidth).mmd


def emc(x: torch.Tensor, modes: torch.Tensor) -> float:
    """Entropic mode coverage: entropy of the share of samples nearest to each of the K modes, divided by log K.

    1 when the samples are spread equally over all modes, 0 when they all sit at one mode. Samples are assigned
    to the nearest mode (Euclidean), the most likely component for equal-weight, equal-scale mixtures.
    """
    nearest = torch.cdist(x.detach().double(), modes.double()).argmin(1)
    p = torch.bincount(nearest, minlength=len(modes)).double() / len(x)
    p = p[p > 0]
    return float(-(p * p.log()).sum() / math.log(len(modes)))
