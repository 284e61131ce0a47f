"""Samplers driven by exact denoisers of a point and of a Gaussian, where the right answer is known in closed form."""

import math

import pytest
import torch

from diffloss.errors import DifflossError
from diffloss.process import get_process
from diffloss.sample import (
    DDPM_SAMPLERS,
    NO_CHURN,
    SAMPLERS,
    Churn,
    ddpm_posterior,
    generate,
    karras_sigmas,
    respaced_timesteps,
    sample,
    step_levels,
    x0_predictor,
)
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
    proc = get_process("vp-cosine", discrete=sampler in DDPM_SAMPLERS)  # the ddpm samplers' chain is discrete

    def model(x_t, t):
        a, s = (v[:, None] for v in proc.alpha_sigma(t))
        eps = (x_t - a * point) / s
        return {"x0": point.expand_as(x_t), "eps": eps, "v": a * eps - s * point, "flow": eps - point}[target]

    D = x0_predictor(model, proc, get_target(target))
    out = generate(D, (64, 2), process=proc, steps=6, seed=0, sampler=sampler, dtype=torch.float64)
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
    a = generate(D, (8, 2), process=vp, steps=5, seed=4, dtype=torch.float64)
    b = generate(D, (8, 2), process=vp, steps=5, seed=4, dtype=torch.float64)
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


# ---- EDM's stochastic sampler and DDPM's ancestral sampler -------------------------------------------------------


def test_edm_without_churn_is_heun_step_for_step():
    """S_churn = 0 draws no noise and takes Heun's steps: identical tensors after every number of steps."""
    sigmas = step_levels(get_process("vp"), 12)
    x, _ = start_and_exact_end(sigmas, n=100)
    for k in range(1, len(sigmas)):
        levels = torch.cat([sigmas[:k], torch.zeros(1, dtype=torch.float64)])
        edm = sample(gaussian_D, x, levels, sampler="edm", churn=Churn(s_tmin=0.05, s_tmax=50, s_noise=1.003),
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert torch.equal(edm, sample(gaussian_D, x, levels, sampler="heun"))


def test_edm_churn_follows_algorithm_2():
    """One step written out by hand: gamma = min(S_churn / N, sqrt 2 - 1), noise to s_hat, Euler from s_hat to 0."""
    sigmas = torch.tensor([2.0, 0.0], dtype=torch.float64)
    x = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    out = sample(gaussian_D, x, sigmas, sampler="edm", churn=Churn(s_churn=0.3, s_noise=1.1),
                 generator=torch.Generator().manual_seed(5))  # fmt: skip
    s_hat = 2.0 * 1.3  # gamma = min(0.3 / 1, 0.414) = 0.3
    x_hat = x + math.sqrt(s_hat**2 - 4.0) * 1.1 * torch.randn(1, 2, generator=torch.Generator().manual_seed(5),
                                                             dtype=torch.float64)  # fmt: skip
    assert torch.allclose(out, gaussian_D(x_hat, torch.tensor([s_hat], dtype=torch.float64)), rtol=1e-12)
    assert Churn(s_churn=80).gamma(1.0, 10) == math.sqrt(2) - 1 and Churn(s_churn=80, s_tmax=0.5).gamma(1.0, 10) == 0


def test_edm_with_churn_lands_on_the_gaussian():
    """EDM's ImageNet settings (S_churn = 40 over 64 steps, noise added for 0.05 <= s <= 50)."""
    sigmas = step_levels(get_process("vp"), 64)
    x, _ = start_and_exact_end(sigmas, n=20000)
    churn = Churn(s_churn=40, s_tmin=0.05, s_tmax=50, s_noise=1.0)
    out = sample(gaussian_D, x, sigmas, sampler="edm", churn=churn, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(out, sample(gaussian_D, x, sigmas, sampler="heun"))
    assert torch.allclose(out.mean(0), MU, atol=0.05)
    assert torch.allclose(out.var(0) / VAR, torch.ones(2, dtype=torch.float64), atol=0.06)


def test_respaced_timesteps_and_betas():
    """guided-diffusion's space_timesteps(1000, [10]) keeps 0, 111, ..., 999; at K = T the chain's betas are DDPM's."""
    assert respaced_timesteps(1000, 10) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert respaced_timesteps(1000, 1) == [999] and respaced_timesteps(4, 4) == [3, 2, 1, 0]
    for proc, betas in [
        (get_process("vp", discrete=True), torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)),
        (
            get_process("vp", discrete=True, T=50, beta_start=1e-3, beta_end=0.2),
            torch.linspace(1e-3, 0.2, 50, dtype=torch.float64),
        ),
    ]:
        s = step_levels(proc, proc.T, "respaced").tolist()
        chain = torch.tensor([ddpm_posterior(a, b).beta for a, b in zip(s, s[1:])][::-1], dtype=torch.float64)
        assert torch.allclose(chain, betas, rtol=1e-9, atol=0)
    # a respaced chain keeps alpha_bar at its steps: the product of its betas' (1 - beta) is alpha_bar there
    vp = get_process("vp-cosine", discrete=True)
    s = step_levels(vp, 7, "respaced").tolist()
    alpha_bar = torch.tensor([1 - ddpm_posterior(a, b).beta for a, b in zip(s, s[1:])][::-1]).cumprod(0)
    assert torch.allclose(alpha_bar, vp.alphas_cumprod()[respaced_timesteps(1000, 7)[::-1]].float(), rtol=1e-5)


def test_ddpm_posterior_is_ho_et_al():
    """Ho et al.'s posterior coefficients from (alpha_bar, alpha_bar_prev), against the s-axis formulas."""
    ab, ab_prev = 0.3, 0.7
    post = ddpm_posterior(math.sqrt((1 - ab) / ab), math.sqrt((1 - ab_prev) / ab_prev))
    beta = 1 - ab / ab_prev
    expect = (beta, math.sqrt(ab_prev) * beta / (1 - ab), math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab),
              beta * (1 - ab_prev) / (1 - ab))  # fmt: skip
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(post, expect))
    assert ddpm_posterior(0.5, 0.0)[1:] == (1.0, 0.0, 0.0)


def test_ddpm_is_ddim_with_eta_one():
    """Two derivations of DDPM's step, in x_t with the posterior and on the s axis (DDIM, eta = 1), agree."""
    sigmas = step_levels(get_process("vp", discrete=True), 50, "respaced")
    x, _ = start_and_exact_end(sigmas, n=100)
    ddpm = sample(gaussian_D, x, sigmas, sampler="ddpm", generator=torch.Generator().manual_seed(2))
    ddim = sample(gaussian_D, x, sigmas, sampler="ddim", eta=1.0, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(ddpm, ddim, rtol=0, atol=1e-12)


@pytest.mark.parametrize("sampler", ["ddpm", "ddpm-large"])
def test_ddpm_lands_on_the_gaussian_as_respaced_steps_grow(sampler):
    """The mean is exact at any K; the variance error (fixed small: a deficit, fixed large: an excess) falls as K
    grows 10 -> 50 -> 200 (Monte Carlo error of the variance ratio ~0.01)."""
    errors = []
    for steps in (10, 50, 200):
        sigmas = step_levels(get_process("vp", discrete=True), steps, "respaced")
        x, _ = start_and_exact_end(sigmas, n=20000)
        out = sample(gaussian_D, x, sigmas, sampler=sampler, generator=torch.Generator().manual_seed(3))
        assert torch.allclose(out.mean(0), MU, atol=0.03)
        errors.append((out.var(0) / VAR - 1).abs().max().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.1


@pytest.mark.parametrize("sampler", ["edm", "ddpm", "ddpm-large"])
def test_new_samplers_are_deterministic_and_clip(sampler):
    vp = get_process("vp", discrete=True)
    D = x0_predictor(gaussian_model(vp, "eps"), vp, get_target("eps"), clip=0.8)
    churn = Churn(s_churn=10) if sampler == "edm" else NO_CHURN

    def draw(seed):
        return generate(D, (64, 2), process=vp, steps=8, seed=seed, sampler=sampler, churn=churn, dtype=torch.float64)

    a, b, c = draw(4), draw(4), draw(5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 0.8  # the last step returns the clipped x0 estimate


CHURN = Churn(s_churn=1)


def ddpm_samples(process, **kwargs):
    return generate(gaussian_D, (2, 2), process=process, steps=4, sampler="ddpm", seed=0, **kwargs)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Churn(s_churn=-1), "S_churn"),
        (lambda: Churn(s_noise=0), "S_noise"),
        (lambda: Churn(s_tmin=2, s_tmax=1), "S_tmin"),
        (lambda: step_levels(get_process("vp"), 10, "respaced"), "discrete VP"),
        (lambda: step_levels(get_process("edm"), 10, "respaced"), "discrete VP"),
        (lambda: step_levels(get_process("vp", discrete=True), 1001, "respaced"), "1 to 1000 steps"),
        (lambda: ddpm_samples(get_process("vp")), "discrete VP"),
        (lambda: ddpm_samples(get_process("vp", discrete=True), spacing="karras"), "respaced"),
        (lambda: sample(gaussian_D, torch.zeros(2, 2), karras_sigmas(3, 0.1, 1.0), sampler="ddpm"), "Generator"),
        (lambda: sample(gaussian_D, torch.zeros(2, 2), karras_sigmas(3, 0.1, 1.0), sampler="edm", churn=CHURN), "Gen"),
        (lambda: sample(gaussian_D, torch.zeros(2, 2), karras_sigmas(3, 0.1, 1.0), churn=CHURN), "edm sampler only"),
    ],
)
def test_bad_input_of_the_new_samplers(make, message):
    with pytest.raises(DifflossError, match=message):
        make()
