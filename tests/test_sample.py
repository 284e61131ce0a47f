"""Samplers driven by exact denoisers of a point and of a Gaussian, where the right answer is known in closed form."""

import math

import pytest
import torch

from diffloss.errors import DifflossError
from diffloss.process import get_process
from diffloss.sample import SAMPLERS, generate, karras_sigmas, sample, step_levels, x0_predictor
from diffloss.target import get_target

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
VAR = torch.tensor([0.25, 1.0], dtype=torch.float64)


def gaussian_D(x, s):
    """E[x0 | x0 + s eps = x] for x0 ~ N(MU, diag(VAR))."""
    return MU + VAR / (VAR + s[:, None] ** 2) * (x - MU)


def gaussian_model(process, target):
    """The exact prediction of ``target`` given x_t (conditioned on t), written by hand per target."""

    def model(x_t, t):
        a, s = (v[:, None] for v in process.alpha_sigma(t))
        x0 = MU + a * VAR / (a**2 * VAR + s**2) * (x_t - a * MU)
        eps = (x_t - a * x0) / s
        return {"x0": x0, "eps": eps, "v": a * eps - s * x0, "flow": eps - x0}[target]

    return model


def start_and_exact_end(sigmas, n=4000, seed=1):
    """Start from the exact marginal at s_max, and where the exact probability-flow ODE takes those points."""
    s_max = sigmas[0]
    x = MU + (VAR + s_max**2).sqrt() * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=MU.dtype)
    return x, MU + (VAR / (VAR + s_max**2)).sqrt() * (x - MU)


def rms_error(sampler, steps):
    sigmas = step_levels(get_process("vp"), steps)
    x, exact = start_and_exact_end(sigmas)
    return (sample(gaussian_D, x, sigmas, sampler=sampler) - exact).pow(2).mean().sqrt().item()


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("target", ["x0", "eps", "v", "flow"])
def test_single_point_data_lands_on_the_point(sampler, target):
    """For data that is one point, every sampler driven by the exact model (any target) returns that point."""
    point = torch.tensor([0.7, -0.2], dtype=torch.float64)
    proc = get_process("vp-cosine")

    def model(x_t, t):
        a, s = (v[:, None] for v in proc.alpha_sigma(t))
        eps = (x_t - a * point) / s
        return {"x0": point.expand_as(x_t), "eps": eps, "v": a * eps - s * point, "flow": eps - point}[target]

    D = x0_predictor(model, proc, get_target(target))
    g = torch.Generator().manual_seed(0)
    out = generate(D, (64, 2), process=proc, steps=6, generator=g, sampler=sampler, dtype=torch.float64)
    assert torch.allclose(out, point.expand_as(out), atol=1e-6)


@pytest.mark.parametrize("proc", ["vp", "flow", "edm"])
@pytest.mark.parametrize("target", ["x0", "eps", "v", "flow"])
def test_x0_predictor_from_any_target_is_the_posterior_mean(proc, target):
    p = get_process(proc)
    D = x0_predictor(gaussian_model(p, target), p, get_target(target))
    g = torch.Generator().manual_seed(0)
    s = torch.exp(torch.linspace(math.log(0.01), math.log(50), 9, dtype=torch.float64))
    x = MU + (VAR + s[:, None] ** 2).sqrt() * torch.randn(9, 2, generator=g, dtype=torch.float64)
    assert torch.allclose(D(x, s), gaussian_D(x, s), rtol=1e-7, atol=1e-9)


def test_clip_clamps_the_posterior_mean_and_nothing_else():
    p = get_process("vp")
    s = torch.tensor([0.05, 0.5, 5.0], dtype=torch.float64)
    x = torch.tensor([[3.0, -0.2], [0.4, -4.0], [-9.0, 9.0]], dtype=torch.float64)
    D = x0_predictor(gaussian_model(p, "eps"), p, get_target("eps"), clip=0.6)
    assert torch.allclose(D(x, s), gaussian_D(x, s).clamp(-0.6, 0.6), rtol=1e-7, atol=1e-9)
    with pytest.raises(DifflossError, match="clip must be > 0"):
        x0_predictor(gaussian_model(p, "eps"), p, get_target("eps"), clip=0.0)


@pytest.mark.parametrize(
    "sampler, min_ratio, max_ratio", [("euler", 3, 5), ("ddim", 3, 5), ("heun", 10, 40), ("dpm2", 10, 40)]
)
def test_error_shrinks_with_steps_at_the_method_order(sampler, min_ratio, max_ratio):
    """Pathwise error against the exact ODE map: 4x the steps cuts it ~4x (first order) or ~16x (second order)."""
    e4, e16, e64 = (rms_error(sampler, k) for k in (4, 16, 64))
    assert e4 > e16 > e64
    assert min_ratio < e16 / e64 < max_ratio


def test_ddim_without_noise_is_the_euler_step():
    sigmas = step_levels(get_process("vp"), 12)
    x, _ = start_and_exact_end(sigmas, n=100)
    assert torch.allclose(sample(gaussian_D, x, sigmas, sampler="ddim"), sample(gaussian_D, x, sigmas, sampler="euler"))


@pytest.mark.parametrize("sampler, steps", [("euler", 256), ("ddim", 256), ("heun", 64), ("dpm2", 64)])
def test_lands_on_the_gaussian(sampler, steps):
    """Mean and variance of the samples match the data's (Monte Carlo error of the variance ratio ~0.01)."""
    sigmas = step_levels(get_process("vp"), steps)
    x, _ = start_and_exact_end(sigmas, n=20000)
    out = sample(gaussian_D, x, sigmas, sampler=sampler)
    assert torch.allclose(out.mean(0), MU, atol=0.05)
    assert torch.allclose(out.var(0) / VAR, torch.ones(2, dtype=torch.float64), atol=0.06)


def test_stochastic_ddim_lands_on_the_gaussian_as_steps_grow():
    """eta = 1 (DDPM ancestral): the variance deficit shrinks with the number of steps."""
    deficits = []
    for steps in (16, 256):
        sigmas = step_levels(get_process("vp"), steps)
        x, _ = start_and_exact_end(sigmas, n=20000)
        out = sample(gaussian_D, x, sigmas, sampler="ddim", eta=1.0, generator=torch.Generator().manual_seed(3))
        assert torch.allclose(out.mean(0), MU, atol=0.06)
        deficits.append((1 - out.var(0) / VAR).abs().max().item())
    assert deficits[1] < 0.1 < deficits[0]


def test_step_levels_and_determinism():
    s = karras_sigmas(5, 0.002, 80.0, rho=7.0)
    ramp = torch.linspace(0, 1, 5, dtype=torch.float64)
    assert torch.allclose(s[:-1], (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7) and s[-1] == 0
    vp = get_process("vp")
    u = step_levels(vp, 6, "uniform-t")
    assert torch.allclose(vp.t_of_nsr(u[:-1]).diff(), vp.t_of_nsr(u[:-1]).diff()[0].expand(5), atol=1e-9)
    assert torch.allclose(
        step_levels(vp, 4, "log")[:-1].log().diff(), torch.full((3,), math.log(0.002 / 80) / 3, dtype=torch.float64)
    )
    D = x0_predictor(gaussian_model(vp, "eps"), vp, get_target("eps"))
    a = generate(D, (8, 2), process=vp, steps=5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    b = generate(D, (8, 2), process=vp, steps=5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: step_levels(get_process("vp"), 0), "steps must be >= 1"),
        (lambda: step_levels(get_process("vp"), 4, "cosine"), "unknown step spacing"),
        (lambda: sample(gaussian_D, torch.zeros(2, 2), karras_sigmas(3, 0.1, 1.0), sampler="lms"), "unknown sampler"),
        (lambda: sample(gaussian_D, torch.zeros(2, 2), karras_sigmas(3, 0.1, 1.0), sampler="heun", eta=1.0), "ddim"),
        (lambda: sample(gaussian_D, torch.zeros(2, 2), karras_sigmas(3, 0.1, 1.0), sampler="ddim", eta=1.0), "Gen"),
        (lambda: sample(gaussian_D, torch.zeros(2, 2), torch.tensor([1.0, 2.0, 0.0])), "decrease strictly"),
    ],
)
def test_bad_input(make, message):
    with pytest.raises(DifflossError, match=message):
        make()
