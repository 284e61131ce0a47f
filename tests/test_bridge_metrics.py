"""Sampler metrics against closed forms and brute force."""

from __future__ import annotations

import math

import pytest
import torch

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
    """Y = X + delta: for the squared cost OT_eps(X, X + delta) = OT_eps(X, X) + |delta|^2 at every eps, so the
    Sinkhorn divergence is exactly |delta|^2; eps is rel_eps times the mean pairwise cost."""
    x = torch.randn(60, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    delta = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    c = ((x[:, None] - (x + delta)[None]) ** 2).sum(-1)
    for rel_eps in (1e-2, M.SINKHORN_REL_EPS):
        value, eps = M.sinkhorn(x, x + delta, rel_eps=rel_eps)
        assert value == pytest.approx(float((delta**2).sum()), rel=1e-3)  # up to the solvers' tolerance
        assert eps == pytest.approx(rel_eps * float(c.mean()))


def test_mmd_matches_gaussian_closed_form():
    """X ~ N(0, 1), Y ~ N(d, 1), RBF width h: MMD^2 = 2 sqrt(h^2/(h^2+2)) (1 - exp(-d^2 / (2 (h^2+2))))."""
    g = torch.Generator().manual_seed(2)
    n, d, h = 1500, 1.5, 1.0
    x, y = torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g) + d
    exact = math.sqrt(2 * math.sqrt(h * h / (h * h + 2)) * (1 - math.exp(-d * d / (2 * (h * h + 2)))))
    assert M.mmd(x, y, bandwidth=h) == pytest.approx(exact, abs=0.03)  # unbiased MMD^2, square-rooted
    assert M.mmd(x, torch.randn(n, 1, generator=g)) < 0.05


def test_entropic_mode_coverage():
    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    jitter = 0.1 * torch.randn(400, 2, generator=torch.Generator().manual_seed(3))
    assert M.emc(modes.repeat(100, 1) + jitter, modes) == pytest.approx(1.0)
    assert M.emc(modes[:1].repeat(400, 1) + jitter, modes) == pytest.approx(0.0)
    assert M.emc(modes[:2].repeat(200, 1) + jitter, modes) == pytest.approx(0.5)
