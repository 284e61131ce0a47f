"""diffusion_loss: expected values on Gaussian data, what the denoiser receives, diffusers agreement, a UNet step."""

import pytest
import torch

from diffloss.density import get_density
from diffloss.errors import DifflossError
from diffloss.losses import diffusion_loss
from diffloss.process import get_process
from diffloss.target import get_target
from diffloss.weighting import get_weighting

V = 0.3  # data variance per dimension: x0 ~ N(0, V I)


def exact_gaussian_denoiser(process, target):
    """The Bayes-optimal prediction of ``target`` for x0 ~ N(0, V I), written out by hand for each target."""

    def predict(x_t, t):
        a, s = (v.to(x_t.dtype)[:, None] for v in process.alpha_sigma(t.double()))
        x0 = a * V / (a**2 * V + s**2) * x_t
        eps = (x_t - a * x0) / s
        return {"x0": x0, "eps": eps, "v": a * eps - s * x0, "flow": eps - x0}[target]

    return predict


@pytest.mark.parametrize(
    "proc, target, scheme, expected",
    [
        # expected loss per sample = w_target * MSE_target, written in closed form with J = V s^2 / (V + s^2)
        ("vp", "eps", "snr", lambda snr, j: snr * j),
        ("vp", "v", "min-snr", lambda snr, j: torch.clamp(snr, max=5) * j),
        ("vp-cosine", "eps", "debiased", lambda snr, j: snr.sqrt() * j),
        ("flow", "flow", "debiased", lambda snr, j: snr.sqrt() * j),
        ("edm", "x0", "edm", lambda snr, j: (snr + 4.0) * j),
        ("flow", "v", "constant", lambda snr, j: j),
    ],
)
def test_expected_loss_of_the_exact_denoiser(proc, target, scheme, expected):
    p = get_process(proc)
    g = torch.Generator().manual_seed(0)
    x0 = V**0.5 * torch.randn(12, 20000, generator=g, dtype=torch.float64)
    loss, levels = diffusion_loss(
        exact_gaussian_denoiser(p, target),
        x0,
        process=p,
        target=get_target(target),
        weighting=get_weighting(scheme),
        density=get_density("uniform-logsnr", lam_min=-6, lam_max=6),
        generator=g,
    )
    snr, s2 = levels.logsnr.exp(), (-levels.logsnr).exp()
    assert loss.shape == (12,)
    assert torch.allclose(loss, expected(snr, V * s2 / (V + s2)), rtol=0.05)


def _recorder(seen):
    def denoiser(x_t, c):
        seen["x_t"], seen["c"] = x_t, c
        return torch.zeros_like(x_t)

    return denoiser


@pytest.mark.parametrize("cond", ["t", "sigma", "logsnr", "timestep"])
def test_denoiser_receives_the_requested_condition(cond):
    p, seen = get_process("vp"), {}
    x0 = torch.randn(6, 3, 4, 4)
    _, levels = diffusion_loss(
        _recorder(seen),
        x0,
        process=p,
        target=get_target("eps"),
        weighting=get_weighting("snr"),
        density=get_density("uniform-t"),
        generator=torch.Generator().manual_seed(0),
        cond=cond,
    )
    lam = levels.logsnr
    want = {"t": levels.t, "sigma": (-lam / 2).exp(), "logsnr": lam, "timestep": 1000 * levels.t - 1}[cond]
    assert seen["c"].dtype == torch.float32 and seen["c"].shape == (6,)
    assert torch.allclose(seen["c"].double(), want, rtol=1e-6)
    assert torch.allclose(p.logsnr(levels.t), lam)


def test_matches_diffusers_ddpm_noising_and_velocity():
    """Discrete DDPM levels: x_t is DDPMScheduler.add_noise, the v target is DDPMScheduler.get_velocity."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    p, seen = get_process("vp", discrete=True), {}
    g = torch.Generator().manual_seed(5)
    x0, noise = torch.randn(8, 2, 4, 4, generator=g), torch.randn(8, 2, 4, 4, generator=g)
    loss, levels = diffusion_loss(
        _recorder(seen),
        x0,
        process=p,
        target=get_target("v"),
        weighting=get_weighting("constant", on="v"),
        density=get_density("uniform-t", discrete=True),
        generator=g,
        cond="timestep",
        noise=noise,
    )
    steps = seen["c"]
    assert steps.dtype == torch.int64 and torch.equal(steps, levels.timestep)
    assert torch.allclose(seen["x_t"], sched.add_noise(x0, noise, steps), atol=1e-5)
    v = sched.get_velocity(x0, noise, steps)
    assert torch.allclose(loss, v.pow(2).flatten(1).mean(1), rtol=1e-4)


def test_deterministic_given_the_generator():
    p = get_process("flow")
    x0 = torch.randn(5, 7)
    kw = dict(process=p, target=get_target("flow"), weighting=get_weighting("debiased"), density=get_density("sd3"))
    den = exact_gaussian_denoiser(p, "flow")
    a, la = diffusion_loss(den, x0, generator=torch.Generator().manual_seed(1), **kw)
    b, lb = diffusion_loss(den, x0, generator=torch.Generator().manual_seed(1), **kw)
    c, _ = diffusion_loss(den, x0, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a, b) and torch.equal(la.t, lb.t) and not torch.equal(a, c)


def test_timestep_condition_needs_a_ddpm_process():
    with pytest.raises(DifflossError, match="timestep condition needs a DDPM-style process"):
        diffusion_loss(
            _recorder({}),
            torch.randn(2, 3),
            process=get_process("flow"),
            target=get_target("flow"),
            weighting=get_weighting("constant"),
            density=get_density("uniform-t"),
            generator=torch.Generator(),
            cond="timestep",
        )


def test_drives_a_diffusers_unet2dmodel_for_one_step():
    """The README example: a tiny UNet2DModel, eps-prediction, min-SNR-5, DDPM steps; one SGD step lowers the loss
    on the same batch, levels and noise."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
    )
    process = get_process("vp", discrete=True)
    kw = dict(
        process=process,
        target=get_target("eps"),
        weighting=get_weighting("min-snr", gamma=5.0),
        density=get_density("uniform-t", discrete=True),
        cond="timestep",
    )
    x0 = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    opt = torch.optim.SGD(unet.parameters(), lr=1e-2)
    loss, levels = diffusion_loss(lambda x, t: unet(x, t).sample, x0, generator=torch.Generator().manual_seed(2), **kw)
    loss.mean().backward()
    opt.step()
    with torch.no_grad():
        after, _ = diffusion_loss(lambda x, t: unet(x, t).sample, x0, generator=torch.Generator().manual_seed(2), **kw)
    assert loss.shape == (4,) and torch.isfinite(loss).all() and levels.timestep.shape == (4,)
    assert after.mean() < loss.mean()
