"""Detached-path training simulates the states first and the path densities afterwards, in chunks of time steps
(``diffloss.bridge.samplers.simulate``): the same trajectory and gradients as step by step, to rounding."""

from __future__ import annotations

import math

import pytest
import torch

from diffloss.bridge import samplers
from diffloss.bridge.samplers import BRIDGE_SAMPLERS, CONTROL_NETWORKS, BridgeSampler, SamplerConfig, simulate
from diffloss.bridge.targets.synthetic import Gaussian


def _model(sampler: str, network: str, gate: bool) -> BridgeSampler:
    torch.manual_seed(0)
    cfg = SamplerConfig(sampler, 3, 7, hidden=(8, 8), init_std=1.3, score_gate=gate, network=network)
    model = BridgeSampler(cfg).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero control, gate and schedule
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        model.log_sigma.fill_(math.log(0.8))
    return model


@pytest.mark.parametrize("chunk_rows", [5, 16, 10_000])  # 1 time per call, 3 per call (uneven last chunk), all
@pytest.mark.parametrize("gate", [False, True])
@pytest.mark.parametrize("network", CONTROL_NETWORKS)
@pytest.mark.parametrize("sampler", BRIDGE_SAMPLERS)
def test_two_pass_equals_stepwise(sampler, network, gate, chunk_rows, monkeypatch):
    model, target, n = _model(sampler, network, gate), Gaussian(3, mean=0.4, std=0.7, log_Z=0.2), 5
    monkeypatch.setattr(samplers, "CHUNK_ROWS", chunk_rows)
    results = []
    for max_batch in (n, 0):  # two passes, then step by step
        monkeypatch.setattr(samplers, "TWO_PASS_MAX_BATCH", max_batch)
        model.zero_grad()
        path = simulate(model, target, n, torch.Generator().manual_seed(2), detach_path=True)
        (path.log_rn.square().mean() + path.log_q.mean()).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((path.x, path.log_q.detach(), path.log_p.detach(), grads))
    (x2, q2, p2, g2), (x1, q1, p1, g1) = results
    assert torch.equal(x2, x1)  # the same draws, bit for bit
    assert torch.allclose(q2, q1, rtol=1e-12, atol=1e-10) and torch.allclose(p2, p1, rtol=1e-12, atol=1e-10)
    assert len(g2) == len(g1) and all(torch.allclose(a, b, rtol=1e-9, atol=1e-11) for a, b in zip(g2, g1))
    assert float(q1.std()) > 0.1  # a non-trivial path


def test_two_pass_only_for_small_detached_training_batches(monkeypatch):
    """rKL-R (reparameterized path), evaluation (no grad) and large batches run step by step."""
    calls = []
    monkeypatch.setattr(samplers, "_path_densities", lambda *a: calls.append(a) or None)
    model, target = _model("cmcd", "pis", True), Gaussian(3)
    simulate(model, target, 4, torch.Generator(), detach_path=False)
    with torch.no_grad():
        simulate(model, target, 4, torch.Generator(), detach_path=True)
    simulate(model, target, samplers.TWO_PASS_MAX_BATCH + 1, torch.Generator(), detach_path=True)
    assert not calls
    simulate(model, target, 4, torch.Generator(), detach_path=True)
    assert len(calls) == 1
