import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffloss.errors import DifflossError
from diffloss.process import PROCESSES, get_process
from diffloss.target import TARGETS, expand_like, get_target

PROCS = sorted(PROCESSES)


def _batch(seed, p, n=6, d=5):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g, dtype=torch.float64) * 0.96 + 0.02
    t = p.t_min + u * (p.t_max - p.t_min)
    a, s = p.alpha_sigma(t)
    x0 = torch.randn(n, d, generator=g, dtype=torch.float64)
    eps = torch.randn(n, d, generator=g, dtype=torch.float64)
    return x0, eps, expand_like(a, x0), expand_like(s, x0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), proc=st.sampled_from(PROCS), name=st.sampled_from(TARGETS))
def test_perfect_prediction_converts_to_exact_x0_and_eps(seed, proc, name):
    x0, eps, a, s = _batch(seed, get_process(proc))
    tgt = get_target(name)
    xt = a * x0 + s * eps
    x0_hat, eps_hat = tgt.to_x0_eps(tgt.value(x0, eps, a, s), xt, a, s)
    assert torch.allclose(x0_hat, x0, atol=1e-8, rtol=1e-6)
    assert torch.allclose(eps_hat, eps, atol=1e-8, rtol=1e-6)
    # and from x0 back to this target
    assert torch.allclose(tgt.from_x0(x0, xt, a, s), tgt.value(x0, eps, a, s), atol=1e-8, rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), proc=st.sampled_from(PROCS), name=st.sampled_from(TARGETS))
def test_loss_factor_equals_explicit_error_ratio(seed, proc, name):
    """Perturb x0_hat, recompute the target prediction it implies; the squared-error ratio is the factor."""
    x0, eps, a, s = _batch(seed, get_process(proc))
    tgt = get_target(name)
    xt = a * x0 + s * eps
    x0_hat = x0 + 0.1 * torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=x0.dtype)
    err_target = ((tgt.from_x0(x0_hat, xt, a, s) - tgt.value(x0, eps, a, s)) ** 2).mean(1)
    err_x0 = ((x0_hat - x0) ** 2).mean(1)
    factor = tgt.loss_factor(a, s).reshape(-1)
    assert torch.allclose(err_target / err_x0, factor.expand_as(err_x0), rtol=1e-6)


def test_named_factors_from_design():
    """MSE_eps = SNR MSE_x0, MSE_v = (SNR+1) MSE_x0 on VP, score alpha^2/sigma^4, flow 1/t^2."""
    vp = get_process("vp")
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    a, s = vp.alpha_sigma(t)
    snr = (a / s) ** 2
    assert torch.allclose(get_target("eps").loss_factor(a, s), snr)
    assert torch.allclose(get_target("v").loss_factor(a, s), snr + 1)
    assert torch.allclose(get_target("score").loss_factor(a, s), a**2 / s**4)
    a, s = get_process("flow").alpha_sigma(t)
    assert torch.allclose(get_target("flow").loss_factor(a, s), 1 / t**2)


def test_aliases_and_unknown():
    assert get_target("epsilon").name == "eps" and get_target("velocity").name == "flow"
    with pytest.raises(DifflossError, match="unknown target 'y0'"):
        get_target("y0")
