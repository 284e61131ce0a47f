"""The exact optimal-loss estimator against closed forms and a float64 brute-force reference."""

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from scipy.special import logsumexp

from diffloss.errors import DifflossError
from diffloss.optimal.exact import RowPartition, centered_rows, exact_optimal_loss, query_block, query_terms
from diffloss.optimal.posterior import Rows

GH_X, GH_W = hermegauss(201)
GH_W = GH_W / np.sqrt(2 * np.pi)  # E f(eps), eps ~ N(0, 1)  ~=  sum GH_W * f(GH_X)


def two_point_j(a: float, s: float, k_plus: int = 1, k_minus: int = 1) -> float:
    """J* (1-D) of k_plus copies of +a and k_minus copies of -a: m(x) = a tanh(a x / s^2 + log(k+/k-) / 2)."""
    prior = 0.5 * np.log(k_plus / k_minus)
    m = lambda x: a * np.tanh(a * x / s**2 + prior)  # noqa: E731
    p = k_plus / (k_plus + k_minus)
    plus = np.sum(GH_W * (a - m(a + s * GH_X)) ** 2)
    minus = np.sum(GH_W * (-a - m(-a + s * GH_X)) ** 2)
    return p * plus + (1 - p) * minus


def assert_within(result, truth, n_se=4.0, rel=1e-3):
    truth = np.asarray(truth)
    tol = n_se * result.stderr + rel * np.abs(truth) + 1e-12
    assert np.all(np.abs(result.x0_mse - truth) <= tol), (result.x0_mse, truth, result.stderr)


def test_two_points_match_gauss_hermite():
    a, sig = 0.7, np.array([0.2, 0.5, 1.0, 3.0])
    r = exact_optimal_loss(np.array([[a], [-a]]), sig, queries=20000, seed=1)
    truth = [two_point_j(a, s) for s in sig]
    assert_within(r, truth)
    assert np.all(r.stderr[1:] < 0.02 * np.array(truth[1:]))  # informative (s = 0.2 is a rare-event regime)


def test_duplicated_rows_match_weighted_closed_form():
    a, sig = 1.3, np.array([0.5, 1.5])
    x = np.array([[a]] * 3 + [[-a]] * 1)
    assert_within(exact_optimal_loss(x, sig, queries=20000, seed=2), [two_point_j(a, s, 3, 1) for s in sig])


def test_single_point_is_exactly_zero():
    r = exact_optimal_loss(np.array([[3.0, -1.0, 2.0]]), [1e-3, 1.0, 1e3], queries=64)
    assert np.all(r.x0_mse == 0.0) and np.all(r.stderr == 0.0)


def test_small_s_is_exactly_zero_with_large_norm_duplicates():
    # fp32 Gram products of rows with norm ~ 1e3 cancel to errors of ~0.1 in squared distances; the
    # answer at small s must still be exactly 0 (the posterior sits on duplicates of the source row).
    rng = np.random.default_rng(0)
    base = 300 + rng.standard_normal((5, 16))
    x = np.concatenate([base, base[:3], base[:1]])
    r = exact_optimal_loss(x, [1e-3, 1e-2], queries=512, seed=3)
    assert np.all(r.x0_mse == 0.0)


def test_near_duplicate_pair_at_large_norm_is_exact():
    # two rows 2*delta apart sit at norm ~ 1e3 (fp32 cannot resolve delta^2 there), two more rows far away:
    # at s ~ delta only the pair mixes, J* per dim = (2 / N) * two_point_j(delta, s) / D.
    delta, dim = 1e-3, 8
    c = np.full(dim, 400.0)
    e1 = np.eye(dim)[0]
    x = np.stack([c + delta * e1, c - delta * e1, -c, -c + 50 * e1])
    sig = np.array([0.5e-3, 1e-3, 3e-3])
    r = exact_optimal_loss(x, sig, queries=20000, seed=4)
    assert_within(r, [0.5 * two_point_j(delta, s) / dim for s in sig], rel=2e-3)


def test_isotropic_gaussian_large_n_matches_wiener_posterior_variance():
    v, dim, sig = 0.8, 2, np.array([0.3, 1.0, 3.0])
    x = np.sqrt(v) * np.random.default_rng(5).standard_normal((20000, dim))
    r = exact_optimal_loss(x, sig, queries=3000, seed=6)
    vhat = x.var(0).mean()
    truth = sig**2 * vhat / (sig**2 + vhat)
    assert np.all(np.abs(r.x0_mse - truth) <= 4 * r.stderr + 0.02 * truth), (r.x0_mse, truth)


def test_huge_s_gives_the_per_dimension_data_variance():
    x = np.random.default_rng(7).standard_normal((300, 6)) * np.arange(1, 7)
    var = x.var(0).mean()
    r = exact_optimal_loss(x, [1e6], all_rows=True)
    assert r.n_queries == 300
    assert abs(r.x0_mse[0] - var) <= 4 * r.stderr[0] and r.stderr[0] < 0.06 * var
    # with every row once, the uncontrolled term A = <x0, x0 - m> averages to the data variance exactly
    idx, eps = query_block(300, 6, [0], 0, 300, np.arange(300))
    rows = centered_rows(x)
    data = Rows.of(rows)
    a = query_terms(data, data, np.array([1e6]), idx, eps, chunk_rows=64, partition=RowPartition()).a
    assert a.mean() / 6 == pytest.approx(var, rel=1e-5)


def brute_force_terms(x, idx, eps, s):
    """float64 reference: posterior mean m over all rows, A = <x0, x0 - m>, B = <x, x0 - m>, direct ||x0 - m||^2,
    the mode's weight and the mode-row form <x0 - y_mode, x0 - m>."""
    xc = x - x.mean(0)
    x0 = xc[idx]
    xt = x0 + s * eps
    d2 = ((xt[:, None, :] - xc[None]) ** 2).sum(-1)
    lw = -d2 / (2 * s * s)
    w = np.exp(lw - logsumexp(lw, 1, keepdims=True))
    m = w @ xc
    mode = xc[w.argmax(1)]
    return (
        (x0 * (x0 - m)).sum(1),
        (xt * (x0 - m)).sum(1),
        ((x0 - m) ** 2).sum(1),
        w.max(1),
        ((x0 - mode) * (x0 - m)).sum(1),
    )


@pytest.mark.parametrize("dim", [2, 7, 20])
def test_posterior_terms_match_float64_brute_force(dim):
    rng = np.random.default_rng(dim)
    x = rng.standard_normal((90, dim)) + 3 * rng.integers(0, 3, (90, 1))  # three clusters
    x[5] = x[6]  # a duplicate
    sig = np.array([0.05, 0.4, 2.0, 20.0])
    idx, eps = query_block(len(x), dim, [11], 0, 128, None)
    rows = centered_rows(x)
    terms = query_terms(Rows.of(rows), Rows.of(rows), sig, idx, eps, chunk_rows=32, partition=RowPartition())
    a, b = terms.a, terms.b
    n_mode_rows = 0
    for k, s in enumerate(sig):
        a_ref, b_ref, _, mass_ref, mode_ref = brute_force_terms(x, idx, eps.astype(np.float64), s)
        scale = np.abs(a_ref).max() + 1e-3
        assert np.abs(a[k] - a_ref).max() <= 1e-4 * scale
        assert np.abs(b[k] - b_ref).max() <= 1e-4 * (np.abs(b_ref).max() + 1e-3)
        np.testing.assert_allclose(terms.mass[k], mass_ref, rtol=1e-4)
        has = ~np.isnan(terms.fixed[k])
        clear = np.abs(mass_ref - 0.5) > 1e-6  # the duplicated rows 5, 6 sit exactly at 0.5 when x0 is one of them
        np.testing.assert_array_equal(has[clear], mass_ref[clear] >= 0.5)
        assert np.all(np.abs(terms.fixed[k][has] - mode_ref[has]) <= 1e-4 * scale)
        n_mode_rows += int(np.sum(has & (np.abs(mode_ref) > 1e-9)))
    assert n_mode_rows > 0  # the second pass (mode row != source) was exercised


@pytest.mark.parametrize("dim", [3, 12])
def test_estimate_matches_brute_force_direct_form(dim):
    rng = np.random.default_rng(100 + dim)
    x = rng.standard_normal((80, dim)) * rng.uniform(0.2, 2, dim)
    sig = np.array([0.1, 0.7, 2.5])
    r = exact_optimal_loss(x, sig, queries=6000, seed=9)
    q = 20000
    idx, eps = rng.integers(0, len(x), q), rng.standard_normal((q, dim))
    for k, s in enumerate(sig):
        direct = brute_force_terms(x, idx, eps, s)[2] / dim
        se = np.hypot(r.stderr[k], direct.std() / np.sqrt(q))
        assert abs(r.x0_mse[k] - direct.mean()) <= 4 * se + 1e-12, (s, r.x0_mse[k], direct.mean(), se)


def test_conditional_is_within_class_posterior():
    # class 0 = {+a, -a} in 1-D, class 1 = a single point: J*_1 = 0, J*_0 = two-point, overall = weighted
    a, sig = 0.6, np.array([0.3, 1.0])
    x = np.array([[a], [-a], [10.0]])
    r = exact_optimal_loss(x, sig, labels=np.array([4, 4, 9]), queries=30000, seed=3)
    truth0 = np.array([two_point_j(a, s) for s in sig])
    assert set(r.per_class) == {4, 9}
    assert np.all(r.per_class[9] == 0.0)
    assert np.all(np.abs(r.per_class[4] - truth0) <= 4 * r.per_class_stderr[4] + 1e-3 * truth0)
    assert_within(r, 2 / 3 * truth0)


def test_auto_queries_reach_the_target_relative_stderr():
    x = np.random.default_rng(8).standard_normal((200, 4))
    r = exact_optimal_loss(x, [0.5, 2.0], rel_stderr=0.02)
    assert np.all(r.stderr <= 0.02 * r.x0_mse * 1.05) and r.n_queries >= 1024


def test_results_do_not_depend_on_chunking():
    x = np.random.default_rng(9).standard_normal((150, 5)).astype(np.float32)
    a = exact_optimal_loss(x, [0.3, 1.0], queries=300, chunk_rows=7)
    b = exact_optimal_loss(torch.from_numpy(x), [0.3, 1.0], queries=300, max_memory=10**8)
    np.testing.assert_allclose(a.x0_mse, b.x0_mse, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sigmas": [0.0]}, "> 0"),
        ({"sigmas": [float("nan")]}, "finite"),
        ({"queries": 1}, ">= 2"),
        ({"labels": np.zeros(3, dtype=int)}, "labels"),
        ({"rel_stderr": 0.0}, "rel_stderr"),
        ({"chunk_rows": 0}, "chunk_rows"),
    ],
)
def test_bad_arguments_raise_difflosserror(kwargs, message):
    kw = {"sigmas": [1.0], **kwargs}
    with pytest.raises(DifflossError, match=message):
        exact_optimal_loss(np.ones((5, 2)), kw.pop("sigmas"), **kw)
