"""Sinkhorn and MMD against independent references: exact OT (ot.emd2), closed forms, brute force."""

import math

import numpy as np
import ot
import pytest
import torch
from scipy.spatial.distance import cdist, pdist

from diffloss.errors import DifflossError
from diffloss.metrics.distances import entropic_ot, median_bandwidth, mmd, self_entropic_ot, sinkhorn


def clouds(n=7, m=7, d=2, shift=0.7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((m, d)) + shift


def exact_w2sq(x, y):
    return ot.emd2(np.full(len(x), 1 / len(x)), np.full(len(y), 1 / len(y)), cdist(x, y, "sqeuclidean"))


@pytest.mark.parametrize("eps", [0.3, 0.05, 0.01])
def test_entropic_ot_is_bracketed_by_exact_ot(eps):
    # W <= OT_eps <= W + eps * KL(best permutation plan || a b^T) = W + eps * log n (n = m, uniform weights)
    x, y = clouds()
    w = exact_w2sq(x, y)
    v = entropic_ot(x, y, epsilon=eps, max_iter=20000, tol=1e-9)
    assert w - 1e-6 <= v <= w + eps * math.log(len(x)) + 1e-6


def test_sinkhorn_divergence_tends_to_exact_ot_as_eps_shrinks():
    x, y = clouds(n=6, m=6, seed=1)
    w = exact_w2sq(x, y)
    errs = [abs(sinkhorn(x, y, epsilon=e, max_iter=20000, tol=1e-9) - w) for e in (0.5, 0.05, 0.005)]
    assert errs[-1] < 0.005 * math.log(6) and errs[-1] < errs[0]


def test_sinkhorn_divergence_large_eps_is_squared_mean_difference():
    x, y = clouds(n=30, m=40, d=3, shift=0.5, seed=2)
    expected = float(((x.mean(0) - y.mean(0)) ** 2).sum())
    assert sinkhorn(x, y, epsilon=1e5) == pytest.approx(expected, rel=1e-3)


def test_symmetric_self_transport_agrees_with_pot():
    x, _ = clouds(n=12, d=3, seed=9)
    pot = entropic_ot(x, x, epsilon=0.1, max_iter=20000, tol=1e-9)
    assert self_entropic_ot(x, epsilon=0.1, tol=1e-10) == pytest.approx(pot, rel=1e-7)


def test_sinkhorn_divergence_is_zero_on_identical_clouds_but_entropic_cost_is_not():
    x, _ = clouds(n=20, seed=3)
    assert abs(sinkhorn(x, x.copy(), epsilon=0.1)) < 1e-6
    assert sinkhorn(x, x.copy(), epsilon=0.1, debiased=False) > 1e-3


def test_sinkhorn_accepts_torch_and_unequal_sizes():
    x, y = clouds(n=9, m=13, seed=4)
    a = sinkhorn(torch.from_numpy(x).float(), torch.from_numpy(y).float(), epsilon=0.1)
    assert a == pytest.approx(sinkhorn(x.astype(np.float32), y.astype(np.float32), epsilon=0.1), rel=1e-9)
    assert a > 0


def mmd2_brute(x, y, h):
    k = lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h))  # noqa: E731
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_mmd_matches_brute_force_u_statistic():
    x, y = clouds(n=11, m=8, d=3, seed=5)
    r = mmd(x, y, bandwidth=1.3)
    assert r.mmd2 == pytest.approx(mmd2_brute(x, y, 1.3), rel=1e-12)
    assert r.mmd == pytest.approx(math.sqrt(r.mmd2))


def test_median_heuristic_is_median_pairwise_distance():
    x, y = clouds(n=15, m=10, d=4, seed=6)
    assert median_bandwidth(x, y) == pytest.approx(np.median(pdist(np.concatenate([x, y]))), rel=1e-12)
    assert mmd(x, y).bandwidth == pytest.approx(median_bandwidth(x, y))


def test_mmd_between_gaussians_matches_closed_form():
    # X ~ N(mu1, s1^2 I_d), Y ~ N(mu2, s2^2 I_d), RBF length scale h:
    # E k(X, Y) = (h^2 / (h^2 + s1^2 + s2^2))^(d/2) exp(-|mu1 - mu2|^2 / (2 (h^2 + s1^2 + s2^2)))
    rng = np.random.default_rng(7)
    d, s1, s2, h = 3, 1.0, 1.5, 2.0
    mu = np.array([0.8, 0.0, 0.0])
    x = s1 * rng.standard_normal((2000, d))
    y = mu + s2 * rng.standard_normal((2000, d))
    e = lambda a, b, dm2: (h * h / (h * h + a * a + b * b)) ** (d / 2) * math.exp(-dm2 / (2 * (h * h + a * a + b * b)))  # noqa: E731
    exact = e(s1, s1, 0.0) + e(s2, s2, 0.0) - 2 * e(s1, s2, float(mu @ mu))
    assert mmd(x, y, bandwidth=h).mmd2 == pytest.approx(exact, rel=0.1)


def test_mmd_of_a_copy_is_about_zero():
    # Same points on both sides: MMD^2_u = 2/(n-1) * (mean_ij k(x_i, x_j) - 1), in [-2/(n-1), 0].
    x, _ = clouds(n=300, d=5, seed=8)
    r = mmd(x, x.copy(), bandwidth=1.0)
    kbar = np.exp(-cdist(x, x, "sqeuclidean") / 2).mean()
    assert r.mmd2 == pytest.approx(2 / 299 * (kbar - 1), rel=1e-9) and r.mmd == 0.0


@pytest.mark.parametrize(
    "x, y, kwargs, message",
    [
        (np.zeros((5, 2)), np.zeros((5, 3)), {}, "same D"),
        (np.zeros((1, 2)), np.zeros((5, 2)), {}, "at least 2 points"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), {}, "NaN"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {}, "median pairwise distance is 0"),
        (np.eye(3), np.eye(3), {"bandwidth": -1.0}, "bandwidth"),
    ],
)
def test_mmd_bad_input(x, y, kwargs, message):
    with pytest.raises(DifflossError, match=message):
        mmd(x, y, **kwargs)


def test_sinkhorn_bad_epsilon():
    x, y = clouds()
    with pytest.raises(DifflossError, match="epsilon"):
        sinkhorn(x, y, epsilon=0.0)


def test_sinkhorn_warns_when_iterations_run_out():
    x, y = clouds(n=30, seed=10)
    with pytest.warns(UserWarning, match="did not converge"):
        self_entropic_ot(x, epsilon=1.0, max_iter=2)
    with pytest.warns(UserWarning, match="did not converge"):
        entropic_ot(x, y, epsilon=1e-3, max_iter=25)
    with pytest.raises(DifflossError, match="epsilon"):
        self_entropic_ot(x, epsilon=float("nan"))
