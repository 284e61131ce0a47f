"""CMCD's Langevin step: explicit Euler is stable iff step * curvature < 2, and the targets' suggested steps obey it."""

from __future__ import annotations

import pytest
import torch

from diffloss.bridge import default_init_sigma, make_config
from diffloss.bridge import metrics as M
from diffloss.bridge.samplers import BridgeSampler, SamplerConfig, simulate
from diffloss.bridge.targets import get_sampling_target
from diffloss.bridge.targets.synthetic import Gaussian


def _uncontrolled_cmcd(target, steps: int, n: int = 2000):
    """Final states and R of the untrained (zero control, linear schedule) CMCD at the target's default sigma."""
    sigma = default_init_sigma(target, "cmcd", steps)
    model = BridgeSampler(SamplerConfig("cmcd", target.dim, steps, hidden=(8,), init_sigma=sigma)).double()
    with torch.no_grad():
        path = simulate(model, target, n, torch.Generator().manual_seed(0), detach_path=True)
    return path.x, path.log_rn


@pytest.mark.parametrize("steps", [32, 128])
def test_default_sigma_sets_the_langevin_step(steps):
    """sigma^2 / (2K) equals the target's suggested step for CMCD whatever K is; DIS, DBS and targets without one: 1."""
    credit = get_sampling_target("german_credit")
    sigma = default_init_sigma(credit, "cmcd", steps)
    assert sigma**2 / (2 * steps) == pytest.approx(credit.langevin_step, rel=1e-12)
    assert (
        default_init_sigma(credit, "dis", steps)
        == default_init_sigma(get_sampling_target("funnel"), "cmcd", steps)
        == 1.0
    )
    assert make_config("german_credit", "cmcd", steps=steps).sampler.init_sigma == sigma
    assert make_config("german_credit", "cmcd", steps=steps, init_sigma=0.3).sampler.init_sigma == 0.3


def test_euler_langevin_blows_up_exactly_past_step_times_curvature_two():
    """Gaussian target of std 0.02 (curvature lambda = 2500): the Euler map multiplies the distance to the mean by
    1 - s * lambda each step, so with s * lambda = 1 the samples land on the target and log Z_hat is right, with
    s * lambda = 4 (|1 - s * lambda| = 3) they run away geometrically, which is the German Credit blow-up."""
    target = Gaussian(dim=2, mean=1.0, std=0.02, log_Z=0.3)
    lam = 1 / target.std**2
    target.langevin_step = 1.0 / lam
    x, R = _uncontrolled_cmcd(target, 32)
    assert 0.5 * target.std < float(x.std(0).max()) < 2 * target.std
    assert abs(M.log_z_hat(R) - target.log_Z) < 2.0
    target.langevin_step = 4.0 / lam
    x, R = _uncontrolled_cmcd(target, 32)
    assert float(x.std(0).min()) > 100 * target.std
    assert M.elbo(R) < -1e6


def test_credit_step_is_below_the_euler_limit_everywhere():
    """-grad^2 log p~ of flat-prior logistic regression is X^T diag(p(1-p)) X <= X^T X / 4 (p(1-p) <= 1/4, equal at
    w = 0). The suggested step times that bound is < 2 (stable at every w and beta), the old sigma = 1, K = 32 is not;
    the autograd Hessian at random points never exceeds the bound."""
    credit = get_sampling_target("german_credit")
    X = credit.features
    bound = float(torch.linalg.eigvalsh(X.T @ X).max()) / 4
    assert credit.langevin_step * bound < 2 < (1.0 / (2 * 32)) * bound
    g = torch.Generator().manual_seed(0)
    for w in [torch.zeros(credit.dim, dtype=torch.float64), *torch.randn(3, credit.dim, generator=g).double()]:
        hess = torch.autograd.functional.hessian(lambda v: -credit.log_prob(v[None])[0], w)
        assert float(torch.linalg.eigvalsh(hess).max()) <= bound * (1 + 1e-9)


def test_untrained_cmcd_on_credit_is_finite_at_the_default_sigma():
    """With the suggested step the untrained CMCD's ELBO on German Credit is a few thousand nats below log Z
    (-504.5), not -1e6 as with sigma = 1."""
    x, R = _uncontrolled_cmcd(get_sampling_target("german_credit"), 32, n=256)
    assert bool(torch.isfinite(x).all())
    assert -2e4 < M.elbo(R) < -504.0
