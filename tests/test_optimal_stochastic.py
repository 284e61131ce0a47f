"""Stochastic optimal-loss estimators (DOL / cDOL / SNIS) against a float64 brute-force full posterior and
closed forms."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from diffloss.cli import cli as diffloss_cli
from diffloss.errors import DifflossError
from diffloss.optimal.stochastic import stochastic_optimal_loss

SIGMAS = [0.05, 0.3, 1.0, 3.0]


def brute_force(x, sigmas, queries, seed):
    """J*(s) per dimension by Monte Carlo over (row, ε) with the full float64 posterior (direct form
    ‖x0 − m‖²/D, independent of the code under test), and its standard error."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float64)
    n, d = x.shape
    est, err = [], []
    for s in sigmas:
        j = rng.integers(n, size=queries)
        xt = x[j] + s * rng.standard_normal((queries, d))
        logits = -((xt[:, None, :] - x[None]) ** 2).sum(-1) / (2 * s * s)
        w = np.exp(logits - logits.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        v = ((x[j] - w @ x) ** 2).sum(1) / d
        est.append(v.mean())
        err.append(v.std() / math.sqrt(queries))
    return np.array(est), np.array(err)


def two_blobs(n, d, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    x[: n // 2] += 2.0
    return x


@pytest.fixture(scope="module")
def data():
    x = two_blobs(100, 5)
    ref, ref_err = brute_force(x, SIGMAS, 30000, seed=1)
    return x, ref, ref_err


def within(result, ref, ref_err, k=4.0):
    tol = k * np.sqrt(result.stderr**2 + ref_err**2) + 1e-12
    return np.abs(result.x0_mse - ref) <= tol


@pytest.mark.parametrize("d", [2, 10])
def test_full_subset_with_unit_correction_is_exact(d):
    x = two_blobs(60, d, seed=d)
    ref, ref_err = brute_force(x, SIGMAS, 20000, seed=2)
    r = stochastic_optimal_loss(x, SIGMAS, subset_size=60, correction=1.0, queries=8000, seed=3)
    assert r.estimator == "dol" and r.meta["draws"] == 63  # 8000 queries in draws of 128
    assert within(r, ref, ref_err).all(), (r.x0_mse, r.stderr, ref, ref_err)
    assert (r.bias == 0).all()  # L = N with C = 1 is the consistent estimator on all rows: no bias


def test_converges_to_exact_as_subset_grows(data):
    """With the consistent coefficient C = (N-1)/(L-1) the error shrinks as L -> N and vanishes at L = N."""
    x, ref, ref_err = data
    n = len(x)
    errs = []
    for size in (4, 16, 100):
        r = stochastic_optimal_loss(x, SIGMAS, subset_size=size, correction=(n - 1) / (size - 1), queries=12000)
        errs.append(np.abs(r.x0_mse - ref)[2])  # s = 1, where the subset bias is largest
        if size == n:
            assert within(r, ref, ref_err).all()
    assert errs[0] > errs[1] > errs[2], errs
    assert errs[0] > 10 * ref_err[2]  # the bias at small L is real, not Monte Carlo noise


def test_dol_underestimates_and_its_bias_shrinks_with_subset_size(data):
    x, ref, ref_err = data
    gaps = []
    for size in (5, 20, 50):
        r = stochastic_optimal_loss(x, SIGMAS, subset_size=size, correction=1.0, queries=12000)
        gap = (r.x0_mse - ref)[1:3]  # s = 0.3 and 1, where the posterior spreads over several rows
        assert (gap < -4 * np.sqrt(r.stderr[1:3] ** 2 + ref_err[1:3] ** 2)).all(), (size, gap)
        assert (r.bias[1:3] < 0).all()  # the Richardson estimate points the same way
        gaps.append(-gap[1])
    assert gaps[0] > gaps[1] > gaps[2] > 0, gaps


@pytest.mark.parametrize("size", [20, 40])
@pytest.mark.parametrize("c", [1.0, None])
def test_bias_estimate_tracks_the_true_error(data, size, c):
    """The reported bias (paired difference to the consistent C plus its extrapolated bias) agrees with the
    actual error against the brute force where the posterior is spread (s = 1, 3)."""
    x, ref, ref_err = data
    r = stochastic_optimal_loss(x, SIGMAS, subset_size=size, correction=c, queries=12000)
    err = (r.x0_mse - ref)[2:]
    noise = 4 * np.sqrt(r.stderr**2 + ref_err**2)[2:]
    assert (np.abs(r.bias[2:] - err) <= 0.3 * np.abs(err) + noise).all(), (r.bias, err, noise)


def test_snis_keeps_a_floor_at_small_noise(data):
    """Without the source row SNIS cannot collapse onto it: at small s it overestimates J* (about 0 there)."""
    x, ref, ref_err = data
    r = stochastic_optimal_loss(x, SIGMAS, subset_size=20, correction=math.inf, queries=4000)
    assert r.estimator == "snis"
    assert (r.x0_mse[:2] > ref[:2] + 5 * np.sqrt(r.stderr[:2] ** 2 + ref_err[:2] ** 2)).all()


@pytest.mark.parametrize("size,c", [(20, 1.0), (20, 99 / 19), (20, 40.0), (100, 1.0), (7, math.inf)])
def test_large_noise_limit_closed_form(data, size, c):
    """At s -> inf all kernels are equal: m^ = (y_j/C + sum_R y_i) / (1/C + L - 1), so
    E J = v * (1 - (1/C - (L-1)/(N-1)) / (1/C + L - 1)) with v the per-dimension data variance:
    v itself for C = (N-1)/(L-1) (and so for L = N, C = 1)."""
    x = data[0]
    n = len(x)
    v = ((x - x.mean(0)) ** 2).mean()
    expected = v * (1 - (1 / c - (size - 1) / (n - 1)) / (1 / c + size - 1))
    r = stochastic_optimal_loss(x, [1e6], subset_size=size, correction=c, queries=20000, seed=5)
    assert abs(r.x0_mse[0] - expected) <= 4 * r.stderr[0], (r.x0_mse, expected, r.stderr)


def two_point_mse(a, s, d):
    """Per-dimension J* of the pair {+a, -a}·e1 (posterior mean a·tanh(a·x1/s²)), by Gauss-Hermite."""
    z, w = np.polynomial.hermite_e.hermegauss(200)
    r = a / s
    return float((w * (a * (1 - np.tanh(r * r + r * z))) ** 2).sum() / w.sum()) / d


def test_exact_at_small_noise_on_close_pairs_far_from_the_origin():
    """Pairs 2a = 2e-3 apart, the pairs ~100 apart and far from 0: the float32 expanded distances cancel
    catastrophically, the estimator must still match the two-point closed form."""
    rng = np.random.default_rng(7)
    d, a = 4, 1e-3
    centers = 1000 + 100 * rng.standard_normal((20, d))
    e1 = np.eye(d)[0]
    x = np.concatenate([centers + a * e1, centers - a * e1]).astype(np.float32)
    sigmas = [5e-4, 1e-3, 3e-3]
    r = stochastic_optimal_loss(x, sigmas, subset_size=len(x), correction=1.0, queries=6000, seed=8)
    # the float32 rows store centers +- a only to ~1e-4 relative accuracy in a: use the stored half-distances
    half = np.abs(x[:20, 0].astype(np.float64) - x[20:, 0]) / 2
    expected = [np.mean([two_point_mse(h, s, d) for h in half]) for s in sigmas]
    assert np.allclose(r.x0_mse, expected, atol=4 * r.stderr.max() + 1e-12, rtol=0.05), (r.x0_mse, expected)
    assert r.x0_mse[1] > 0.1 * a * a / d  # not the trivial 0


def test_duplicated_rows_give_zero_at_small_noise():
    x = np.repeat(two_blobs(10, 3), 3, axis=0) + 50.0
    r = stochastic_optimal_loss(x, [1e-3], subset_size=30, correction=1.0, queries=500)
    assert abs(r.x0_mse[0]) < 1e-9


def test_labels_give_the_class_conditional_optimal_loss():
    x = two_blobs(80, 3, seed=4)
    labels = np.repeat([0, 1], 40)
    ref = [brute_force(x[labels == k], SIGMAS[1:3], 10000, seed=10 + k) for k in (0, 1)]
    r = stochastic_optimal_loss(x, SIGMAS[1:3], subset_size=40, correction=1.0, queries=8000, labels=labels)
    assert set(r.per_class) == {0, 1}
    for k in (0, 1):
        est, err = ref[k]
        se = r.per_class_stderr[k]
        assert (np.abs(r.per_class[k] - est) <= 4 * np.sqrt(se**2 + err**2)).all()
    assert np.allclose(r.x0_mse, (r.per_class[0] + r.per_class[1]) / 2)
    unconditional = brute_force(x, SIGMAS[1:3], 10000, seed=12)[0]
    assert r.x0_mse[1] < unconditional[1]  # knowing the class can only help


def test_meta_and_names(data):
    x = data[0]
    r = stochastic_optimal_loss(x, [1.0], subset_size=10, queries=300, queries_per_draw=64)
    assert r.estimator == "cdol"
    assert r.meta["correction_value"] == pytest.approx(4 * 100 / 10)
    # 300 queries: 16 draws of 18 queries and one of 12 (at least 16 draws, at most 64 queries each)
    assert r.meta["subset_size"] == 10 and r.meta["draws"] == 17 and r.n_queries == 300
    assert r.bias.shape == r.stderr.shape == (1,)
    snis = stochastic_optimal_loss(x, [1.0], subset_size=10, correction=math.inf, queries=2)
    assert snis.meta["correction_value"] == "inf" and np.isfinite(snis.stderr).all()
    json.dumps(snis.to_dict(), allow_nan=False)  # the result is plain JSON


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"subset_size": 101}, "subset size"),
        ({"subset_size": 0}, "subset size"),
        ({"correction": 0.0}, "correction"),
        ({"correction": -2.0}, "correction"),
        ({"queries": 0}, "queries"),
        ({"queries": 1}, "queries"),
        ({"queries": None}, "queries"),
        ({"sigmas": [1.0, 0.0]}, "> 0"),
        ({"sigmas": [float("nan")]}, "> 0"),
        ({"labels": np.zeros(99, int)}, "one entry per data row"),
        ({"labels": np.repeat([0, 1], [95, 5]), "subset_size": 10}, "smallest class"),
        ({"subset_size": 1, "correction": math.inf}, "SNIS"),
    ],
)
def test_bad_input_raises(data, kwargs, match):
    args = {"sigmas": [1.0], "subset_size": 10, "queries": 10, **kwargs}
    with pytest.raises(DifflossError, match=match):
        stochastic_optimal_loss(data[0], args.pop("sigmas"), **args)


def test_cli_stochastic_at_full_subset_matches_brute_force(tmp_path):
    """`diffloss optimal-loss --estimator stochastic` end to end: at L = N, C = 1 it is the exact J*."""
    x = two_blobs(60, 3, seed=6)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o.json"
    args = ["--data", str(tmp_path / "x.npy"), "--estimator", "stochastic", "--subset-size", "60"]
    args += ["--correction", "1", "--queries", "6000", "--sigmas", "0.3,1,3", "--no-cache", "--quiet"]
    r = CliRunner().invoke(diffloss_cli, ["optimal-loss", *args, "--json", str(out)])
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    assert report["estimator"] == "dol" and len(report["bias"]) == 3
    got = np.array([lv["x0_mse"] for lv in report["levels"]])
    err = np.array([lv["stderr"] for lv in report["levels"]])
    ref, ref_err = brute_force(x, [0.3, 1, 3], 20000, seed=9)
    assert (np.abs(got - ref) <= 4 * np.sqrt(err**2 + ref_err**2)).all(), (got, ref)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--subset-size", "10"], "needs a number of queries"),
        (["--subset-size", "1", "--correction", "inf", "--queries", "64"], "SNIS (C = inf) needs subset size"),
        (["--subset-size", "40", "--queries", "64", "--labels", "LABELS"], "smallest class"),
    ],
)
def test_cli_stochastic_bad_input_one_line_no_output(tmp_path, args, message):
    np.save(tmp_path / "x.npy", two_blobs(60, 3))
    np.save(tmp_path / "labels.npy", np.repeat([0, 1], [50, 10]))
    args = [str(tmp_path / "labels.npy") if a == "LABELS" else a for a in args]
    out = tmp_path / "o.json"
    cmd = ["optimal-loss", "--data", str(tmp_path / "x.npy"), "--estimator", "stochastic", "--sigmas", "1", *args]
    r = CliRunner().invoke(diffloss_cli, [*cmd, "--no-cache", "--quiet", "--json", str(out)])
    assert r.exit_code != 0
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], r.output
    assert not out.exists()
