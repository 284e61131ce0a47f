"""Sampler metrics against closed forms and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist

from diffloss.bridge import metrics as M


def test_weights_metrics_closed_forms():
    R = torch.full((10,), -1.25)
    assert M.ess(R) == pytest.approx(1.0) and M.log_z_hat(R) == pytest.approx(1.25) and M.elbo(R) == 1.25
    R = torch.tensor([0.0, 50.0, 50.0, 50.0])  # one weight dominates: ESS = 1/B
    assert M.ess(R) == pytest.approx(0.25, rel=1e-6)
    R = torch.tensor([0.0, math.log(2.0)])  # w = 1, 1/2
    assert M.ess(R) == pytest.approx(1.5**2 / (2 * 1.25))
    assert M.log_z_hat(R) == pytest.approx(math.log(0.75))
    assert M.elbo(R) == pytest.approx(-math.log(2.0) / 2)


def test_sinkhorn_of_a_translation_is_the_squared_shift():
    """Y = X + delta: the identity coupling is optimal for the squared cost, so W2^2 = |delta|^2."""
    x = torch.randn(60, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    delta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    cost, eps = M.sinkhorn(x, x + delta, rel_eps=1e-3)
    assert cost == pytest.approx(float((delta**2).sum()), rel=0.02)
    c = ((x[:, None] - (x + delta)[None]) ** 2).sum(-1)
    assert eps == pytest.approx(1e-3 * float(c.mean()))
    default, eps = M.sinkhorn(x, x + delta)
    assert eps == pytest.approx(M.SINKHORN_REL_EPS * float(c.mean()))
    assert default >= cost - 1e-6  # entropic blur only adds transport cost


def test_median_bandwidth_is_the_median_pairwise_distance():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(30, 4, generator=g), torch.randn(21, 4, generator=g) + 1
    assert M.median_bandwidth(x, y) == pytest.approx(float(np.median(pdist(torch.cat([x, y]).numpy()))), rel=1e-6)


def test_mmd_matches_gaussian_closed_form():
    """X ~ N(0, 1), Y ~ N(d, 1), RBF width h: MMD^2 = 2 sqrt(h^2/(h^2+2)) (1 - exp(-d^2 / (2 (h^2+2))))."""
    g = torch.Generator().manual_seed(2)
    n, d, h = 1500, 1.5, 1.0
    x, y = torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g) + d
    exact = math.sqrt(2 * math.sqrt(h * h / (h * h + 2)) * (1 - math.exp(-d * d / (2 * (h * h + 2)))))
    assert M.mmd(x, y, bandwidth=h) == pytest.approx(exact, abs=0.03)
    assert M.mmd(x, torch.randn(n, 1, generator=g)) < 0.05


def test_entropic_mode_coverage():
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    jitter = 0.1 * torch.randn(400, 2, generator=torch.Generator().manual_seed(3))
    assert M.emc(modes.repeat(100, 1) + jitter, modes) == pytest.approx(1.0)
    assert M.emc(modes[:1].repeat(400, 1) + jitter, modes) == pytest.approx(0.0)
    assert M.emc(modes[:2].repeat(200, 1) + jitter, modes) == pytest.approx(0.5)
