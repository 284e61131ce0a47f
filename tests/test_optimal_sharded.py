"""Sharded exact estimation (rows over 2 local gloo workers) gives the single-process numbers."""

import numpy as np
import torch

from diffloss.optimal.exact import exact_optimal_loss
from diffloss.optimal.posterior import PosteriorSums
from diffloss.optimal.sharded import spawn_optimal_loss


def test_merge_of_split_states_equals_the_whole():
    # log-sum-exp states over two halves of a set of logits merge to the state over all of them
    rng = np.random.default_rng(0)
    logits, h = rng.normal(0, 30, (2, 3, 50)), rng.normal(size=(2, 3, 50))

    def state(sl):
        lg = torch.from_numpy(logits[..., sl])
        shift = lg.amax(-1)
        e = torch.exp(lg - shift[..., None])
        hh = torch.from_numpy(h[..., sl])
        best, row = lg.max(-1)
        return PosteriorSums(shift, e.sum(-1), (e * hh).sum(-1), (e * 2 * hh).sum(-1), best, row + sl.start * 1.0)

    merged = state(slice(0, 20)).merge(state(slice(20, 50)))
    whole = state(slice(0, 50))
    np.testing.assert_allclose(merged.inner_terms()[0], whole.inner_terms()[0], rtol=1e-12)
    np.testing.assert_allclose(merged.shift + merged.z.log(), whole.shift + whole.z.log(), rtol=1e-12)
    assert torch.equal(merged.best_row, whole.best_row)


def test_two_workers_match_one_process():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((400, 6)) + 2 * rng.integers(0, 4, (400, 1))).astype(np.float32)
    labels = rng.integers(0, 3, 400)
    sig = np.array([0.02, 0.3, 1.0, 10.0])
    kw = dict(queries=300, seed=5, chunk_rows=50, labels=labels)
    one = exact_optimal_loss(x, sig, **kw)
    two = spawn_optimal_loss(x, sig, workers=2, **kw)
    # equal to 1e-6 of the curve's scale (chunk boundaries and running shifts differ: fp32 rounding only)
    tol = 1e-6 * one.x0_mse.max()
    np.testing.assert_allclose(two.x0_mse, one.x0_mse, rtol=1e-6, atol=tol)
    np.testing.assert_allclose(two.stderr, one.stderr, rtol=1e-6, atol=tol)
    for c in one.per_class:
        np.testing.assert_allclose(two.per_class[c], one.per_class[c], rtol=1e-6, atol=tol)
    assert two.n_queries == one.n_queries
