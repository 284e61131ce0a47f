"""Level densities: samples agree with the stated log-density, published parametrizations, bad input."""

import math

import pytest
import torch

from diffloss.density import DENSITIES, density_from_dict, density_from_function, density_from_spec, get_density
from diffloss.errors import DifflossError
from diffloss.process import PROCESSES, get_process

CASES = [
    ("uniform-t", {}),
    ("uniform-t", {"discrete": True}),
    ("edm-lognormal", {}),
    ("logit-normal", {"loc": 0.5, "scale": 0.8}),
    ("uniform-logsnr", {"lam_min": -4, "lam_max": 6}),
]

APPLICABLE = [  # discrete steps exist only for the VP processes
    (n, kw, proc)
    for n, kw in CASES
    for proc in sorted(PROCESSES)
    if not kw.get("discrete") or get_process(proc).family == "vp"
]


@pytest.mark.parametrize("name, params, proc", APPLICABLE)
def test_samples_follow_log_prob(name, params, proc):
    """The empirical CDF of sampled log-SNRs matches the integral of exp(log_prob) (two independent code paths)."""
    p, dens = get_process(proc), get_density(name, **params)
    lam = dens.sample(4000, torch.Generator().manual_seed(1), p).logsnr
    lo, hi = dens.support(p)
    grid = torch.linspace(max(lo, -40), min(hi, 40), 40001, dtype=torch.float64)
    pdf = dens.log_prob(grid, p).exp()
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(pdf, grid)])
    assert cdf[-1].item() == pytest.approx(1.0, abs=2e-3)
    if params.get("discrete"):
        return  # a point mass per step: its log_prob is the continuous limit, checked for normalization only
    for q in (0.1, 0.3, 0.5, 0.7, 0.9):
        x = torch.quantile(lam, q)
        assert cdf[torch.searchsorted(grid, x).clamp(max=len(grid) - 1)].item() == pytest.approx(q, abs=0.03)


def test_edm_lognormal_is_karras_density():
    """ln sigma ~ N(-1.2, 1.2^2) on the EDM process: sigma = t, so ln t has that mean and std."""
    levels = get_density("edm-lognormal").sample(20000, torch.Generator().manual_seed(0), get_process("edm"))
    ln_sigma = levels.t.log()
    assert ln_sigma.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert ln_sigma.std().item() == pytest.approx(1.2, abs=0.03)
    assert torch.allclose(levels.nsr, levels.t, rtol=1e-12)


def test_logit_normal_is_sd3_on_the_flow_time():
    levels = get_density("sd3", loc=0.3, scale=1.0).sample(20000, torch.Generator().manual_seed(0), get_process("flow"))
    logit_t = torch.log(levels.t / (1 - levels.t))
    assert logit_t.mean().item() == pytest.approx(0.3, abs=0.03)
    assert logit_t.std().item() == pytest.approx(1.0, abs=0.03)


def test_uniform_t_on_flow_and_discrete_steps_match_diffusers():
    t = get_density("uniform-t").sample(20000, torch.Generator().manual_seed(0), get_process("flow")).t
    assert t.min() > 0 and t.max() < 1 and t.mean().item() == pytest.approx(0.5, abs=0.01)
    from diffusers import DDPMScheduler

    proc = get_process("vp", discrete=True)
    levels = get_density("uniform-t", discrete=True).sample(5000, torch.Generator().manual_seed(0), proc)
    steps = levels.timestep
    assert steps.dtype == torch.int64 and steps.min() == 0 and steps.max() == 999
    abar = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").alphas_cumprod[steps].double()
    assert torch.allclose(proc.alpha(levels.t) ** 2, abar, rtol=1e-5)


def test_density_from_function_and_tabulated_sampling():
    dens = density_from_function(lambda lam: -((lam - 1.0) ** 2) / (2 * 1.5**2), -8, 10, cells=400)
    lam = dens.sample(20000, torch.Generator().manual_seed(0), get_process("vp")).logsnr
    assert lam.mean().item() == pytest.approx(1.0, abs=0.05) and lam.std().item() == pytest.approx(1.5, abs=0.05)
    x = torch.tensor([1.0], dtype=torch.float64)
    assert dens.log_prob(x, get_process("vp")).exp().item() == pytest.approx(
        1 / (1.5 * math.sqrt(2 * math.pi)), rel=1e-3
    )
    assert density_from_dict(dens.to_dict()) == dens


NEEDS = {"optimal": {"jstar_logsnr": [-6.0, 0.0, 6.0], "jstar": [0.4, 0.1, 0.01]}}  # a J* table, no defaults


def test_same_generator_same_levels_and_round_trip():
    p = get_process("vp-cosine")
    for name in DENSITIES:
        if name == "tabulated":
            continue
        d = get_density(name, **NEEDS.get(name, {}))
        a = d.sample(16, torch.Generator().manual_seed(3), p)
        b = d.sample(16, torch.Generator().manual_seed(3), p)
        assert torch.equal(a.t, b.t) and torch.equal(a.logsnr, b.logsnr)
        assert density_from_dict(d.to_dict()) == d
    assert density_from_spec("default", get_process("edm")) == get_density("edm-lognormal", p_mean=-1.2, p_std=1.2)
    assert density_from_spec("edm-lognormal:p_mean=-0.4") == get_density("lognormal", p_mean=-0.4)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: get_density("beta"), "unknown level density 'beta'"),
        (lambda: get_density("edm-lognormal", p_std=0), "p_std > 0"),
        (lambda: get_density("uniform-t", discrete="maybe"), "not a valid bool"),
        (
            lambda: get_density("uniform-t", discrete=True).sample(4, torch.Generator(), get_process("flow")),
            "process 'flow' is continuous",
        ),
        (
            lambda: get_density("uniform-logsnr", lam_min=15, lam_max=20).sample(
                4, torch.Generator(), get_process("ve")
            ),
            "misses the log-SNR range",
        ),
        (
            lambda: density_from_function(lambda x: 0 * x, -12, 0).sample(4, torch.Generator(), get_process("edm")),
            "reaches only",
        ),
        (lambda: density_from_spec("default"), "needs a process"),
        (lambda: get_density("tabulated", edges=(0.0, 1.0), log_weights=(0.0, 1.0)), "K + 1 edges"),
    ],
)
def test_bad_input(make, message):
    with pytest.raises(DifflossError) as e:
        make()
    assert message in str(e.value)
