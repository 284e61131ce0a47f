"""Frechet distance and KID against closed forms and brute-force references (no classifier needed)."""

import numpy as np
import pytest
import scipy.linalg

from diffloss.errors import DifflossError
from diffloss.metrics.fid import fid, frechet_distance, gaussian_stats, kid, polynomial_mmd2


def random_cov(d, rng, rank=None):
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d


def test_frechet_distance_diagonal_closed_form():
    # Commuting covariances: FD = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_formula():
    rng = np.random.default_rng(1)
    c1, c2 = random_cov(8, rng), random_cov(8, rng)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2) - 2 * np.trace(scipy.linalg.sqrtm(c1 @ c2)).real
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-8)
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(ref, rel=1e-8)


def test_frechet_distance_singular_covariances_is_finite_and_zero_on_self():
    rng = np.random.default_rng(2)
    c = random_cov(10, rng, rank=3)  # rank 3 in 10-d, as with few samples
    mu = rng.standard_normal(10)
    assert frechet_distance(mu, c, mu, c) == pytest.approx(0.0, abs=1e-9)
    # shifting the mean alone adds exactly |shift|^2
    assert frechet_distance(mu, c, mu + 0.5, c) == pytest.approx(10 * 0.25, rel=1e-7)


def test_fid_of_samples_matches_their_gaussian_stats():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((500, 4)), 2 * rng.standard_normal((400, 4)) + 1
    mx, cx = gaussian_stats(x)
    np.testing.assert_allclose(cx, np.cov(x.T))
    # N(0, I) vs N(1, 4I) in 4-d: FD = 4 * 1 + 4 * (1 - 2)^2 = 8
    assert fid(x, y) == pytest.approx(8.0, rel=0.1)


def kid_brute(x, y):
    d = x.shape[1]
    k = lambda a, b: (float(a @ b) / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return kxx + kyy - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)


def test_polynomial_mmd_matches_brute_force():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((9, 5)), rng.standard_normal((12, 5)) + 0.3
    assert polynomial_mmd2(x, y) == pytest.approx(kid_brute(x, y), rel=1e-12)


def test_kid_is_unbiased_for_same_distribution():
    # Many independent small-sample KIDs of one distribution average to 0 (a biased V-statistic would not:
    # it adds about (E k(x,x) - E k(x,x')) * 2/m > 0).
    rng = np.random.default_rng(5)
    vals = [polynomial_mmd2(rng.standard_normal((20, 3)), rng.standard_normal((20, 3))) for _ in range(2000)]
    mean, se = np.mean(vals), np.std(vals) / np.sqrt(len(vals))
    assert abs(mean) < 4 * se
    x = rng.standard_normal((20, 3))
    biased_excess = 2 / 20 * (np.mean(np.diag((x @ x.T / 3 + 1) ** 3)) - np.mean((x @ x.T / 3 + 1) ** 3))
    assert biased_excess > 10 * se  # the test could tell a biased estimator apart


def test_kid_subsets_mean_and_std_and_detects_a_shift():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((600, 4)), rng.standard_normal((600, 4))
    same = kid(x, y, subset_size=200, subsets=50)
    assert same.subset_size == 200 and same.subsets == 50
    assert abs(same.mean) < 3 * same.std
    shifted = kid(x, y + 1.0, subset_size=200, subsets=50)
    assert shifted.mean > 5 * shifted.std


def test_kid_caps_subset_size_and_refuses_bad_input():
    rng = np.random.default_rng(7)
    assert kid(rng.standard_normal((30, 2)), rng.standard_normal((50, 2)), subsets=3).subset_size == 30
    with pytest.raises(DifflossError, match="dimensions differ"):
        kid(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(DifflossError, match="NaN"):
        fid(np.full((5, 2), np.nan), np.zeros((5, 2)))
