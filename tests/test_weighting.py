"""Weightings against their published forms, conversions between targets, implied weights, bad input."""

import math

import pytest
import torch

from diffloss.density import get_density
from diffloss.errors import DifflossError
from diffloss.process import PROCESSES, VPCosine, get_process
from diffloss.target import TARGETS, expand_like, get_target
from diffloss.weighting import (
    WEIGHTINGS,
    get_weighting,
    implied_elbo_weight,
    weighting_from_dict,
    weighting_from_spec,
)

LAM = torch.linspace(-8, 8, 33, dtype=torch.float64)
SNR = LAM.exp()
VP, FLOW, EDM = get_process("vp"), get_process("flow"), get_process("edm")


def close(a, b, rtol=1e-10):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), rtol=rtol)


# ---- published forms -----------------------------------------------------------------------------------
def test_debiased_published_forms():
    w = get_weighting("debiased")
    assert close(w.weight(LAM, VP, "eps"), 1 / SNR.sqrt())
    assert close(w.weight(LAM, VP, "v"), SNR.sqrt() / (SNR + 1))
    t = FLOW.t_of_logsnr(LAM)
    assert close(w.weight(LAM, FLOW, "flow"), t * (1 - t))


def test_min_snr_published_forms_and_diffusers_training_recipe():
    w = get_weighting("min-snr", gamma=5)
    five = torch.full_like(SNR, 5.0)
    assert close(w.weight(LAM, VP, "v"), torch.minimum(SNR, five) / (SNR + 1))
    assert close(w.weight(LAM, VP, "eps"), torch.minimum(SNR, five) / SNR)
    assert close(w.weight(LAM, VP, "x0"), torch.minimum(SNR, five))
    # diffusers' train_text_to_image recipe: snr = compute_snr(scheduler, timesteps); min(snr, 5) / snr (eps),
    # min(snr, 5) / (snr + 1) (v). Its own SNR of the DDPM chain must give the same weights as ours.
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    steps = torch.tensor([0, 10, 100, 400, 700, 999])
    snr = compute_snr(sched, steps).double()
    proc = get_process("vp", discrete=True)
    lam = proc.logsnr(proc.timestep_t(steps))
    assert close(lam.exp(), snr, rtol=1e-3)  # diffusers' alphas_cumprod is float32: 1 - 1e-4 loses 4 digits
    assert close(w.weight(snr.log(), proc, "eps"), torch.clamp(snr, max=5) / snr)
    assert close(w.weight(snr.log(), proc, "v"), torch.clamp(snr, max=5) / (snr + 1))


@pytest.mark.parametrize("k, gamma", [(1.0, 1.0), (1.0, 0.5), (0.5, 2.0)])
def test_p2_on_eps(k, gamma):
    assert close(get_weighting("p2", k=k, gamma=gamma).weight(LAM, VP, "eps"), 1 / (k + SNR) ** gamma)


def test_edm_weight_and_its_effective_weight_on_the_preconditioned_output():
    sd = 0.5
    w = get_weighting("edm", sigma_data=sd)
    s = (-LAM / 2).exp()
    assert close(w.weight(LAM, EDM, "x0"), (s**2 + sd**2) / (s * sd) ** 2)
    # EDM paper sec. 5: lambda(sigma) = 1 / c_out(sigma)^2, so the weight on the F-network's error is uniform
    c_out = s * sd / (s**2 + sd**2).sqrt()
    assert close(w.weight(LAM, EDM, "x0") * c_out**2, torch.ones_like(LAM))


def test_soft_min_snr_matches_k_diffusion_on_the_preconditioned_output():
    sd = 0.5
    s = (-LAM / 2).exp()
    c_out = s * sd / (s**2 + sd**2).sqrt()  # F-error = x0-error / c_out
    w_f = get_weighting("soft-min-snr", gamma=1 / sd**2).weight(LAM, EDM, "x0") * c_out**2
    assert close(w_f, (s * sd) ** 2 / (s**2 + sd**2) ** 2)


def test_snr_truncated_constant_sigmoid():
    assert close(get_weighting("snr").weight(LAM, VP, "eps"), torch.ones_like(LAM))  # DDPM's L_simple
    assert close(get_weighting("truncated-snr").weight(LAM, VP, "x0"), torch.maximum(SNR, torch.ones_like(SNR)))
    assert close(get_weighting("truncated-snr").weight(LAM, VP, "eps"), torch.maximum(1 / SNR, torch.ones_like(SNR)))
    for name in TARGETS:
        for proc in (VP, FLOW):
            assert close(get_weighting("constant", on=name).weight(LAM, proc, name), torch.ones_like(LAM))
    for b in (-3.0, 0.0, 2.0):
        w = get_weighting("sigmoid", bias=b)
        assert close(w.weight(LAM, VP, "eps"), 1 / (1 + (LAM - b).exp()))  # Kingma & Gao, on eps
        assert close(w.weight(LAM, FLOW, "x0"), math.exp(b) / (1 + (b - LAM).exp()))  # SiD2's x0 form


def test_p2_k1_gamma1_is_the_sigmoid_with_zero_bias():
    """Two independently published schemes that coincide: 1/(1+SNR) on eps = sigmoid(-lambda)."""
    for name in TARGETS:
        a = get_weighting("p2", k=1, gamma=1).weight(LAM, FLOW, name)
        assert close(a, get_weighting("sigmoid", bias=0).weight(LAM, FLOW, name))


# the optimal weighting has no usable defaults: it needs a J* table
NEEDS = {"optimal": {"jstar_logsnr": [-6.0, 0.0, 6.0], "jstar": [0.4, 0.1, 0.01]}}


# ---- conversions between targets -----------------------------------------------------------------------
@pytest.mark.parametrize("scheme", sorted(WEIGHTINGS))
@pytest.mark.parametrize("proc", sorted(PROCESSES))
def test_weighted_loss_is_the_same_in_every_target(scheme, proc):
    """For one x0 prediction, w_T * ||y_hat_T - y_T||^2 computed from the targets' own values is T-independent."""
    p = get_process(proc)
    lo, hi = p.logsnr_range()
    lam = torch.linspace(max(lo, -6), min(hi, 6), 7, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    x0_hat = x0 + 0.3 * torch.randn(7, 5, generator=g, dtype=torch.float64)
    a, s = (expand_like(v, x0) for v in p.alpha_sigma(p.t_of_logsnr(lam)))
    x_t = a * x0 + s * eps
    w = get_weighting(scheme, **NEEDS.get(scheme, {}))
    losses = []
    for name in TARGETS:
        tgt = get_target(name)
        err = (tgt.from_x0(x0_hat, x_t, a, s) - tgt.value(x0, eps, a, s)).pow(2).mean(1)
        losses.append(w.weight(lam, p, tgt) * err)
    for other in losses[1:]:
        assert torch.allclose(other, losses[0], rtol=1e-7)


# ---- implied (ELBO-style) weights: the published effective weightings ----------------------------------
def _ratio_is_constant(a, b):
    r = a / b
    return torch.allclose(r, r.mean().expand_as(r), rtol=1e-6)


def test_edm_weight_with_its_density_reproduces_the_published_effective_weighting():
    """Kingma & Gao (VDM++) and Esser et al. (SD3): EDM = N(lambda; 2.4, 2.4^2) * (e^-lambda + 0.5^2) / 0.5^2."""
    dens = get_density(**EDM.default_density())
    w = implied_elbo_weight(get_weighting("edm"), dens, EDM, LAM)
    normal = torch.exp(-((LAM - 2.4) ** 2) / (2 * 2.4**2)) / (2.4 * math.sqrt(2 * math.pi))
    published = normal * ((-LAM).exp() + 0.25) / 0.25
    assert _ratio_is_constant(w, published)
    assert close(w, 2 * published, rtol=1e-4)  # K&G's 1/2 convention; truncation to [0.002, 80] moves 2e-5


def test_flow_matching_implied_weights_match_sd3():
    """SD3 (Esser et al. 2024, sec. 3.1): rectified flow w = t / (1 - t); with logit-normal t: w * pi_ln(t)."""
    plain = get_weighting("constant", on="flow")
    t = FLOW.t_of_logsnr(LAM)
    assert close(implied_elbo_weight(plain, get_density("uniform-t"), FLOW, LAM), t / (1 - t), rtol=1e-4)
    m, sc = 0.5, 1.3
    logit = torch.log(t / (1 - t))
    pi_ln = torch.exp(-((logit - m) ** 2) / (2 * sc**2)) / (sc * math.sqrt(2 * math.pi) * t * (1 - t))
    w = implied_elbo_weight(plain, get_density("logit-normal", loc=m, scale=sc), FLOW, LAM)
    assert close(w, t / (1 - t) * pi_ln, rtol=1e-9)


def test_cosine_schedule_implied_weights_match_sd3_up_to_a_constant():
    """SD3 Table: cosine schedule with eps-prediction: sech(lambda / 2); with v-prediction: e^(-lambda / 2)."""
    cosine = VPCosine(s=0.0)
    dens = get_density("uniform-t")
    w_eps = implied_elbo_weight(get_weighting("constant", on="eps"), dens, cosine, LAM)
    w_v = implied_elbo_weight(get_weighting("constant", on="v"), dens, cosine, LAM)
    assert _ratio_is_constant(w_eps, 1 / torch.cosh(LAM / 2))
    assert _ratio_is_constant(w_v, torch.exp(-LAM / 2))


def test_implied_weight_is_zero_outside_the_density():
    w = implied_elbo_weight(get_weighting("snr"), get_density("uniform-logsnr", lam_min=-1, lam_max=1), VP, LAM)
    assert (w[LAM.abs() > 1] == 0).all() and close(w[LAM.abs() < 1], torch.ones(int((LAM.abs() < 1).sum())))


# ---- configs and bad input -----------------------------------------------------------------------------
def test_round_trip_and_specs():
    for name in WEIGHTINGS:
        w = get_weighting(name, **NEEDS.get(name, {}))
        assert weighting_from_dict(w.to_dict()) == w
    assert weighting_from_spec("min-snr:gamma=1") == get_weighting("min-snr", gamma=1.0)
    assert weighting_from_spec("vdm++:bias=2").to_dict() == {"name": "sigmoid", "bias": 2.0}
    assert get_weighting("constant", on="velocity").on == "flow"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: get_weighting("min-snr-7"), "unknown weighting 'min-snr-7'"),
        (lambda: get_weighting("min-snr", gamma=0), "gamma > 0"),
        (lambda: get_weighting("min-snr", k=1), "has no parameter(s) k"),
        (lambda: get_weighting("min-snr", gamma="five"), "is not a valid float"),
        (lambda: get_weighting("p2", gamma=-1), "gamma >= 0"),
        (lambda: get_weighting("constant", on="z"), "unknown target 'z'"),
        (lambda: weighting_from_spec("min-snr:gamma"), "key=value"),
        (lambda: weighting_from_dict({"gamma": 5}), "needs a 'name'"),
        (lambda: get_weighting("edm").weight(torch.tensor([20.0]), EDM, "x0"), "undefined at log-SNR 20"),
        (lambda: get_weighting("snr").weight(torch.tensor([-12.0]), VP, "eps"), "only reaches [-10.05, inf]"),
        (lambda: get_weighting("snr").weight(torch.tensor([0.0]), VP, "noise2"), "unknown target"),
    ],
)
def test_bad_input(make, message):
    with pytest.raises(DifflossError) as e:
        make()
    assert message in str(e.value)
