import json
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from diffloss.errors import DifflossError
from diffloss.process import PROCESSES, alpha_sigma_of_logsnr, get_process, process_from_dict

ALL = [get_process(n) for n in PROCESSES] + [get_process("vp", discrete=True), get_process("vp-cosine", discrete=True)]
IDS = [str(p) for p in ALL]


def interior(p, n=101):
    lo, hi = p.t_min, p.t_max
    return torch.linspace(lo + 1e-3 * (hi - lo), hi - 1e-3 * (hi - lo), n, dtype=torch.float64)


def test_vp_linear_matches_diffusers_alphas_cumprod():
    ref = DDPMScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear"
    ).alphas_cumprod.double()
    p = get_process("vp", discrete=True)
    assert torch.allclose(p.alphas_cumprod(), ref, atol=1e-6, rtol=0)
    assert torch.allclose(p.alpha(p.timestep_t(torch.arange(1000))) ** 2, ref, atol=1e-6, rtol=0)


def test_vp_cosine_matches_diffusers_alphas_cumprod():
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod.double()
    p = get_process("vp-cosine", discrete=True)
    assert torch.allclose(p.alphas_cumprod(), ref, atol=1e-6, rtol=0)
    # the continuous cosine schedule agrees wherever diffusers' beta cap (0.999) is not active
    steps = torch.arange(990)
    cont = get_process("vp-cosine").alpha(p.timestep_t(steps)) ** 2
    assert torch.allclose(cont, ref[:990], atol=1e-6, rtol=0)


def test_vp_linear_continuous_closed_form_is_song_et_al():
    # beta(t) = 0.1 + 19.9 t  =>  log alpha_bar = -(0.1 t + 9.95 t^2)
    p = get_process("vp")
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(p.alpha(t) ** 2, torch.exp(-(0.1 * t + 9.95 * t**2)), rtol=1e-12)
    # the continuous chain is close to the discrete one (same betas, per-step vs per-unit-time)
    d = get_process("vp", discrete=True)
    assert torch.allclose(p.alpha(t), d.alpha(t), atol=2e-3)


@pytest.mark.parametrize("p", ALL, ids=IDS)
def test_t_of_logsnr_inverts_logsnr(p):
    t = interior(p)
    assert torch.allclose(p.t_of_logsnr(p.logsnr(t)), t, atol=1e-9 * max(1.0, p.t_max), rtol=1e-9)


@pytest.mark.parametrize("p", ALL, ids=IDS)
def test_logsnr_strictly_decreasing_and_alpha_sigma_monotone(p):
    t = interior(p, 1001)
    lam = p.logsnr(t)
    a, s = p.alpha_sigma(t)
    assert (lam.diff() < 0).all()
    assert (a.diff() <= 1e-15).all() and (s.diff() > 0).all()
    assert torch.allclose(p.nsr(t), torch.exp(-lam / 2), rtol=1e-10)


@pytest.mark.parametrize("p", ALL, ids=IDS)
def test_family_alpha_sigma_of_logsnr_matches_time_parameterization(p):
    t = interior(p)
    a, s = p.alpha_sigma(t)
    a2, s2 = alpha_sigma_of_logsnr(p.family, p.logsnr(t))
    assert torch.allclose(a, a2, rtol=1e-9) and torch.allclose(s, s2, rtol=1e-9)


def test_endpoints():
    vp, cos, flow = get_process("vp"), get_process("vp-cosine"), get_process("flow")
    for p in (vp, cos):
        a, s = p.alpha_sigma(0.0)
        assert a.item() == 1.0 and s.item() == 0.0 and p.logsnr(0.0).item() == math.inf
    assert vp.alpha(1.0).item() == pytest.approx(math.exp(-0.5 * (0.1 + 9.95)), rel=1e-12)
    assert cos.alpha(1.0).item() < 1e-15
    assert flow.alpha_sigma(0.0) == (1.0, 0.0) and flow.alpha_sigma(1.0) == (0.0, 1.0)
    ve, edm = get_process("ve"), get_process("edm")
    assert ve.sigma(0.0).item() == pytest.approx(0.002) and ve.sigma(1.0).item() == pytest.approx(80.0)
    assert edm.sigma(0.002).item() == pytest.approx(0.002) and edm.alpha(80.0).item() == 1.0
    assert edm.default_density() == {"name": "edm-lognormal", "p_mean": -1.2, "p_std": 1.2}


@pytest.mark.parametrize("p", ALL, ids=IDS)
def test_serialization_round_trip(p):
    d = json.loads(json.dumps(p.to_dict()))
    assert process_from_dict(d) == p


def test_bad_process_inputs():
    with pytest.raises(DifflossError, match="unknown process 'vq'"):
        get_process("vq")
    with pytest.raises(DifflossError, match="no parameter"):
        get_process("flow", sigma_max=3)
    with pytest.raises(DifflossError, match="outside the range"):
        get_process("ve").t_of_nsr(1000.0)
    with pytest.raises(DifflossError, match="outside the range"):
        get_process("edm").t_of_logsnr(float("nan"))
    with pytest.raises(DifflossError):
        get_process("ve", sigma_min=5, sigma_max=1)


def test_t_of_nsr_for_flow_is_s_over_one_plus_s():
    s = np.array([0.01, 1.0, 10.0])
    assert np.allclose(get_process("flow").t_of_nsr(s).numpy(), s / (1 + s))


@pytest.mark.parametrize("p", [get_process(n, discrete=d) for n in ("vp", "vp-cosine") for d in (False, True)])
def test_vp_sigma_at_t0_is_exactly_zero_not_nan(p):
    """log alpha_bar(0) may come out one ulp above 0 (libm-dependent log(cos)); sigma(0) must still be 0."""
    a, s = p.alpha_sigma(torch.tensor([0.0], dtype=torch.float64))
    assert a.item() == 1.0 and s.item() == 0.0
    assert p.logsnr_range()[1] == math.inf


def test_process_from_spec_coerces_parameters():
    from diffloss.process import process_from_spec

    p = process_from_spec("vp:discrete=true,T=500")
    assert p.discrete is True and p.T == 500 and p == get_process("vp", discrete=True, T=500)
    with pytest.raises(DifflossError, match="no parameter"):
        process_from_spec("ve:discrete=true")
