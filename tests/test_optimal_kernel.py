"""The numba CPU kernel of the exact estimator, against numpy / float64 references."""

import numpy as np
import pytest
import torch

from diffloss.optimal import posterior
from diffloss.optimal.posterior import EXP_MIN, MODE_MIN_MASS, Queries, Rows, posterior_sums

kernel = pytest.importorskip("diffloss.optimal.kernel")  # numba (absent on the GPU machine: the torch path runs)


def test_exp_is_accurate_to_a_few_ulps_over_the_weight_range():
    x = np.linspace(EXP_MIN, 0.0, 200_001, dtype=np.float32)
    got = np.array([kernel._exp(v) for v in x[::97]], dtype=np.float64)
    ref = np.exp(x[::97].astype(np.float64))
    assert np.max(np.abs(got / ref - 1)) < 3e-7


def test_weights_below_exp_min_are_exactly_zero():
    assert kernel._weight(np.float32(EXP_MIN - 1e-3), np.float32(EXP_MIN)) == 0.0
    assert kernel._weight(np.float32(-1e30), np.float32(EXP_MIN)) == 0.0
    assert kernel._weight(np.float32(0.0), np.float32(EXP_MIN)) == 1.0


@pytest.mark.parametrize("case", ["mixed", "negative", "positive", "zeros"])
def test_logits_return_the_exact_largest_value(case):
    rng = np.random.default_rng(1)
    d, g = rng.random(1001, dtype=np.float32) * 50, rng.standard_normal(1001).astype(np.float32)
    a, b = {"mixed": (-0.1, 3.0), "negative": (-2.0, 0.1), "positive": (0.5, 0.01), "zeros": (0.0, -0.0)}[case]
    out = np.empty_like(d)
    m = kernel._logits(d, g, np.float32(a), np.float32(b), out)
    np.testing.assert_allclose(out, a * d.astype(np.float64) + b * g, rtol=1e-6, atol=1e-6)  # fused or not
    assert m == out.max()


def _brute_force(x0, eps, y, sigmas):
    """float64 (z-normalized) <x0, x0 - m>, <eps, x0 - m>, the mode's weight and row, per (level, query)."""
    x0, eps, y = x0.double(), eps.double(), y.double()
    out = []
    for s in sigmas:
        xt = x0 + s * eps
        logit = -(torch.cdist(xt, y) ** 2 - ((xt - x0) ** 2).sum(1, keepdim=True)) / (2 * s * s)
        w = torch.softmax(logit, 1)
        m = w @ y
        out.append(((x0 * (x0 - m)).sum(1), (eps * (x0 - m)).sum(1), w.amax(1), w.argmax(1)))
    return [torch.stack(t) for t in zip(*out)]


def _kernel_state(rows, x0, eps, sigmas, chunk):
    """The state of ``kernel.chunk_update`` run chunk by chunk over ``rows`` (the CPU pass), renormalized."""
    return posterior._kernel_posterior_sums(Queries.of(x0, eps), rows, sigmas, chunk, 0)


@pytest.mark.parametrize("chunk", [7, 64])
def test_chunk_update_matches_a_float64_brute_force_with_duplicates(chunk):
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((6, 12)) * 3
    y = centers[rng.integers(0, 6, 90)] + 0.3 * rng.standard_normal((90, 12))
    y = np.concatenate([y, y[:4], y[:1]])  # exact duplicates: near entries, recomputed in float64
    y = torch.from_numpy(y - y.mean(0)).float()
    rows = Rows.of(y)
    idx = torch.tensor([0, 1, 2, 50, 93, 94, 10, 20])
    x0, eps = y[idx], torch.from_numpy(rng.standard_normal((8, 12))).float()
    sigmas = np.array([0.01, 0.1, 0.5, 2.0, 20.0])
    got = _kernel_state(rows, x0, eps, sigmas, chunk)
    hx, gx, top, row = _brute_force(x0, eps, y, sigmas)
    h, g = got.inner_terms()
    scale = float(hx.abs().max())
    torch.testing.assert_close(h, hx, rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(g, gx, rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(got.mode_weight(), top, rtol=1e-4, atol=1e-6)
    located = got.mode_weight() >= MODE_MIN_MASS
    # duplicates tie: the mode row is one of the rows equal to the brute force's
    same = (y[got.best_row[located].long()] == y[row[located]]).all(1)
    assert bool(same.all()) and torch.equal(located, top >= MODE_MIN_MASS)  # a triplicated source holds 1/3 each
    assert float(h[0].abs().max()) == 0.0  # s = 0.01: every posterior sits on the source row or its duplicates


def test_a_chunk_far_below_the_shift_is_skipped_but_its_largest_logit_is_kept():
    # a shard without the source row: its only row's logit (-5000) lies below the shift floor 0 by far more than
    # 95, so the kernel sums nothing (the torch path would hold z = 1 at shift -5000) but records the largest logit
    y = torch.tensor([[0.0, 0.0], [100.0, 0.0]])
    x0, eps = y[:1], torch.zeros(1, 2)
    far = Rows.of(y[1:])
    state = _kernel_state(far, x0, eps, np.array([1.0]), 1).stack()
    shift, z, zh, zg, best, best_row = state[:, 0, 0].tolist()
    assert (shift, z, zh, zg, best_row) == (0.0, 0.0, 0.0, 0.0, -1.0) and best == -5000.0
    # with the source row first, the far row adds exactly nothing
    state = _kernel_state(Rows.of(y), x0, eps, np.array([1.0]), 1).stack()
    assert state[:, 0, 0].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("scale", [1.0, 1e5])
@pytest.mark.parametrize("sync_free", [False, True])
def test_levels_below_the_fp32_range_give_finite_exact_zeros(sync_free, scale):
    # 1 / s^2 overflows fp32 below s ~ 4e-20; the logits are then computed at S_MIN_FP32 (same weights: 0 off
    # the source row and its duplicates), never -inf * 0 = NaN; at a large data scale a d overflows fp32 even
    # then, and the logits are floored at LOGIT_MIN (a chunk of such rows alone must not give a NaN softmax)
    rng = np.random.default_rng(3)
    y = torch.from_numpy(scale * rng.standard_normal((40, 6))).float()
    y = torch.cat([y, y[:3]])
    rows = Rows.of(y - y.mean(0))
    x0, eps = rows.x[[0, 5, 41]], torch.from_numpy(rng.standard_normal((3, 6))).float()
    state = posterior_sums(x0, eps, rows, np.array([1e-90, 1e-30, 1e-16]), chunk_rows=16, sync_free=sync_free)
    h, g = state.inner_terms()
    assert torch.isfinite(state.stack()).all()
    assert float(h.abs().max()) == 0.0 and float(g.abs().max()) == 0.0


def test_without_numba_the_cpu_runs_the_torch_path_to_the_same_numbers(monkeypatch):
    from diffloss.optimal.exact import exact_optimal_loss

    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 10))[rng.integers(0, 8, 300)] + 0.2 * rng.standard_normal((300, 10))
    x = np.concatenate([x, x[:20]])  # duplicates: near entries and mode rows off the source
    sig = [0.02, 0.1, 0.3, 1.0, 5.0]
    with_kernel = exact_optimal_loss(x, sig, queries=512, seed=1, chunk_rows=64, threads=2)
    monkeypatch.setattr(posterior, "cpu_kernel", lambda: None)
    torch_ops = exact_optimal_loss(x, sig, queries=512, seed=1, chunk_rows=64, threads=2)
    np.testing.assert_allclose(torch_ops.x0_mse, with_kernel.x0_mse, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(torch_ops.stderr, with_kernel.stderr, rtol=1e-4, atol=1e-9)
    assert (with_kernel.x0_mse[1:] > 0).all()


def test_a_missing_numba_is_warned_about_once_and_not_fatal(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "diffloss.optimal.kernel", None)  # import raises ImportError
    posterior.cpu_kernel.cache_clear()
    try:
        with pytest.warns(UserWarning, match="pip install numba"):
            assert posterior.cpu_kernel() is None
    finally:
        posterior.cpu_kernel.cache_clear()
