"""Target densities against independent formulas (scipy), quadrature and published constants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats

from diffloss.bridge.targets import SAMPLING_TARGETS, get_sampling_target
from diffloss.bridge.targets.synthetic import GMM40, Funnel, ManyWell, MixtureStudentT, mixture_locations
from diffloss.errors import DifflossError

GEN = torch.Generator


def test_registry_has_the_synthetic_targets():
    assert {"gaussian", "funnel", "gmm40", "mos", "many_well"} <= set(SAMPLING_TARGETS)
    with pytest.raises(DifflossError, match="unknown sampling target 'nope'"):
        get_sampling_target("nope")


def test_funnel_matches_scipy():
    f = Funnel(10)
    x = torch.randn(7, 10, generator=GEN().manual_seed(0), dtype=torch.float64) * 2
    xs = x.numpy()
    ref = stats.norm.logpdf(xs[:, 0], 0, 3) + stats.norm.logpdf(xs[:, 1:], 0, np.exp(xs[:, :1] / 2)).sum(1)
    assert f.log_prob(x).numpy() == pytest.approx(ref, rel=1e-12)


@pytest.mark.slow
def test_funnel_integrates_to_one():
    f, f2 = Funnel(10), Funnel(2)  # normalization by 2-D quadrature

    def p(b, a):
        return math.exp(float(f2.log_prob(torch.tensor([[a, b]], dtype=torch.float64))))

    mass, _ = integrate.dblquad(p, -25, 25, lambda a: -40 * math.exp(a / 2) - 1e-9, lambda a: 40 * math.exp(a / 2))
    assert mass == pytest.approx(1.0, abs=1e-6) and f.log_Z == 0.0


def test_funnel_samples_have_the_funnel_moments():
    x = Funnel(10).sample(20000, GEN().manual_seed(0))
    assert x.shape == (20000, 10) and x.abs().max() <= 30
    assert float(x[:, 0].std()) == pytest.approx(3.0, rel=0.03)
    # E[x_1^2] = E[e^{x_0}] = e^{9/2}; median |x_1| = e^{x0/2}-scaled, check the conditional scale instead
    z = x[:, 1] / torch.exp(x[:, 0] / 2)
    assert float(z.std()) == pytest.approx(1.0, rel=0.03)


def test_gmm40_matches_scipy_mixture_and_file():
    g = GMM40()
    raw = np.load("src/diffloss/assets/bridge/jax_prng_mixture_locs.npz")["gmm40_d50_seed0_legacy"]
    assert g.locs.shape == (40, 50) and g.locs.numpy() == pytest.approx(raw.astype(np.float64))
    x = g.sample(5, GEN().manual_seed(1))
    xs, mus = x.numpy(), g.locs.numpy()
    comp = np.stack([stats.multivariate_normal(mu, np.eye(50)).logpdf(xs) for mu in mus], 1)
    ref = special.logsumexp(comp, 1) - math.log(40)
    assert g.log_prob(x).numpy() == pytest.approx(ref, rel=1e-10)


@pytest.mark.slow
def test_gmm40_2d_integrates_to_one():
    g = GMM40(dim=2)
    grid = torch.linspace(-60, 60, 601, dtype=torch.float64)  # step 0.2: Riemann sums of Gaussians are exact
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    p = torch.exp(g.log_prob(torch.stack([a.flatten(), b.flatten()], 1)))
    assert float(p.sum() * (grid[1] - grid[0]) ** 2) == pytest.approx(1.0, abs=1e-4)


def test_gmm40_samples_cover_components_evenly():
    g = GMM40()
    x = g.sample(8000, GEN().manual_seed(2))
    counts = torch.bincount(torch.cdist(x, g.locs).argmin(1), minlength=40).double()
    assert counts.min() > 0.6 * 200 and counts.max() < 1.4 * 200


def test_mos_matches_scipy_student_t():
    m = MixtureStudentT()
    x = m.sample(6, GEN().manual_seed(3))
    xs, mus = x.numpy(), m.locs.numpy()
    comp = np.stack([stats.t.logpdf(xs, df=2, loc=mu).sum(1) for mu in mus], 1)
    assert m.log_prob(x).numpy() == pytest.approx(special.logsumexp(comp, 1) - math.log(10), rel=1e-10)
    one = integrate.quad(lambda z: math.exp(float(m.component_log_prob(torch.tensor(z)))), -np.inf, np.inf)[0]
    assert one == pytest.approx(1.0, abs=1e-6)


def test_mos_samples_are_student_t_around_the_locations():
    m = MixtureStudentT()
    x = m.sample(20000, GEN().manual_seed(4))
    k = torch.cdist(x, m.locs, p=1).argmin(1)
    z = (x - m.locs[k]).flatten().numpy()
    # quartiles of Student-t(2) are +-sqrt(2/3)... exactly: t_{0.75}(df=2) = 0.8165
    assert np.quantile(z, 0.75) == pytest.approx(stats.t.ppf(0.75, 2), abs=0.02)


def test_many_well_log_z_is_the_published_value_and_quadrature():
    w = ManyWell()
    assert w.log_Z == pytest.approx(164.6957, abs=1e-4)
    well, _ = integrate.quad(lambda a: math.exp(0.5 * a + 6 * a * a - a**4), -np.inf, np.inf)
    assert 16 * (math.log(well) + 0.5 * math.log(2 * math.pi)) == pytest.approx(164.6957, abs=1e-4)
    x = torch.randn(4, 32, generator=GEN().manual_seed(5), dtype=torch.float64)
    a, b = x[:, 0::2].numpy(), x[:, 1::2].numpy()
    ref = (-(-0.5 * a - 6 * a**2 + a**4) - 0.5 * b**2).sum(1)
    assert w.log_prob(x).numpy() == pytest.approx(ref, rel=1e-12)


def test_many_well_samples_match_quadrature_moments():
    w = ManyWell()
    x = w.sample(20000, GEN().manual_seed(6))
    dens = lambda a: math.exp(0.5 * a + 6 * a * a - a**4)  # noqa: E731
    z = integrate.quad(dens, -5, 5)[0]
    m1 = integrate.quad(lambda a: a * dens(a), -5, 5)[0] / z
    p_right = integrate.quad(dens, 0, 5)[0] / z
    a = x[:, 0::2]
    assert float(a.mean()) == pytest.approx(m1, abs=0.01)
    assert float((a > 0).double().mean()) == pytest.approx(p_right, abs=0.005)
    assert float(x[:, 1::2].std()) == pytest.approx(1.0, rel=0.02)


def test_log_prob_keeps_the_input_dtype():
    for name in ("funnel", "gmm40", "mos", "many_well", "gaussian"):
        t = get_sampling_target(name)
        for dt in (torch.float32, torch.float64):
            assert t.log_prob(torch.zeros(3, t.dim, dtype=dt)).dtype == dt


def test_bad_target_parameters():
    with pytest.raises(DifflossError, match="no stored gmm40 locations"):
        mixture_locations("gmm40", 50, seed=7)
    with pytest.raises(DifflossError, match="even dim"):
        ManyWell(31)
