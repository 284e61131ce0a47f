"""Samplers on the noise-to-signal axis s = sigma / alpha, k-diffusion style.

The state is x = x_t / alpha = x0 + s * eps, whose probability-flow ODE is dx/ds = (x - D(x; s)) / s with D the
x0 predictor (the posterior mean E[x0 | x]); the same ODE serves every process (Karras et al. 2022). A model that
predicts any target becomes such a D through ``x0_predictor``. ``sigmas`` are the step levels, decreasing values
of s ending in 0 (``step_levels``; Karras rho = 7 by default); sampling is deterministic given the ``torch.Generator``.

- ``euler``: x <- x + (s' - s) d, d = (x - D(x; s)) / s. One model call per step.
- ``ddim``: the DDIM update with stochasticity ``eta``; eta = 0 is exactly the Euler step above (DDIM is Euler on
  this ODE, Karras et al. 2022 sec. 3), eta = 1 is DDPM's ancestral sampler. One call per step.
- ``heun``: Euler, then the trapezoidal correction (EDM's Algorithm 1); Euler on the last step to s = 0.
- ``dpm2``: midpoint at the geometric mean of s and s' (DPM-Solver-2 as in k-diffusion); Euler on the last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from diffloss.classes import guide
from diffloss.errors import DifflossError, unknown_name
from diffloss.levels import Levels, TargetPredictor, model_condition
from diffloss.process import Process
from diffloss.target import Target, expand_like

if TYPE_CHECKING:
    from diffloss.loader import DiffusionModel

X0Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""D(x, s) -> x0_hat for x = x0 + s * eps of shape (B, ...) and s of shape (B,) (x's dtype)."""

LabelledX0Predictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""D(x, s, labels) -> x0_hat: an ``X0Predictor`` for rows of (B,) int64 class labels (``diffloss.classes``)."""

SAMPLERS: tuple[str, ...] = ("ddim", "euler", "heun", "dpm2")
STEP_SPACINGS: tuple[str, ...] = ("karras", "uniform-t", "log")


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al.'s step levels: ``steps`` values (s_max^(1/rho) ... s_min^(1/rho))^rho, then 0; float64."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    inv_min, inv_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return torch.cat([(inv_max + ramp * (inv_min - inv_max)) ** rho, torch.zeros(1, dtype=torch.float64)])


def step_levels(
    process: Process,
    steps: int,
    spacing: str = "karras",
    *,
    rho: float = 7.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
) -> torch.Tensor:
    """A sampler's step levels: ``steps`` decreasing noise-to-signal ratios s, then 0 (float64, ``steps + 1`` values).

    ``karras`` (rho), ``log`` (log-uniform in s) or ``uniform-t`` (evenly spaced process times, as DDIM). The
    range defaults to EDM's [0.002, 80] clipped to what the process reaches."""
    if steps < 1:
        raise DifflossError(f"steps must be >= 1, got {steps}")
    lam_lo, lam_hi = process.logsnr_range()
    lo = max(0.002 if sigma_min is None else sigma_min, math.exp(-lam_hi / 2))
    hi = min(80.0 if sigma_max is None else sigma_max, math.exp(-lam_lo / 2))
    if not 0 < lo < hi:
        raise DifflossError(f"step levels need 0 < sigma_min < sigma_max within the process's range, got {lo}, {hi}")
    zero = torch.zeros(1, dtype=torch.float64)
    if spacing == "karras":
        return karras_sigmas(steps, lo, hi, rho)
    if spacing == "log":
        return torch.cat([torch.linspace(math.log(hi), math.log(lo), steps, dtype=torch.float64).exp(), zero])
    if spacing == "uniform-t":
        t_hi, t_lo = process.t_of_nsr(torch.tensor([hi, lo], dtype=torch.float64)).tolist()
        return torch.cat([process.nsr(torch.linspace(t_hi, t_lo, steps, dtype=torch.float64)), zero])
    raise unknown_name("step spacing", spacing, STEP_SPACINGS)


def x0_predictor(
    model: TargetPredictor, process: Process, target: Target, cond: str = "t", clip: float | None = None
) -> X0Predictor:
    """Turn ``model(x_t, c) -> prediction of target`` (the convention of ``diffusion_loss``) into D(x, s).

    ``clip``: clamp D to [-clip, clip] (DDPM's ``clip_denoised``; 1 for data scaled to [-1, 1]). The clamped D is
    no longer the model's posterior-mean estimate, so leave it off for anything but drawing samples."""
    if clip is not None and not clip > 0:
        raise DifflossError(f"clip must be > 0, got {clip}")
    lo, hi = process.logsnr_range()

    def predict_x0(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        lam = -2 * torch.log(s.detach().to("cpu", torch.float64))
        levels = Levels.from_logsnr(process, lam.clamp(lo, hi))  # float32 rounding of s at the levels' ends
        a, sg = (expand_like(v.to(x.device), x) for v in process.alpha_sigma(levels.t))
        x_t = a * x
        x0 = target.to_x0_eps(model(x_t, model_condition(levels, process, cond, x)), x_t, a, sg)[0]
        return x0 if clip is None else x0.clamp(-clip, clip)

    return predict_x0


def guided_x0_predictor(
    model: TargetPredictor,
    process: Process,
    target: Target,
    num_classes: int,
    guidance: float,
    cond: str = "t",
    clip: float | None = None,
) -> LabelledX0Predictor:
    """Classifier-free guidance of a class-conditional ``model`` (K = ``num_classes``, called ``model(x_t, c,
    labels)``): D_W(x, s, labels) = D_uncond + W * (D_cond - D_uncond) in x0 space (``diffloss.classes.guide``),
    D_cond the prediction for ``labels`` and D_uncond for the null label K, each through ``x0_predictor``; W = 0
    and W = 1 call the model once. ``clip`` clamps the guided D (see ``x0_predictor``)."""
    if guidance < 0:
        raise DifflossError(f"guidance must be >= 0 (0 = unconditional, 1 = conditional), got {guidance}")
    if clip is not None and not clip > 0:
        raise DifflossError(f"clip must be > 0, got {clip}")

    def d_for(x: torch.Tensor, s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return x0_predictor(lambda x_t, c: model(x_t, c, labels), process, target, cond)(x, s)

    def predict_x0(x: torch.Tensor, s: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        null = torch.full_like(labels, num_classes)
        if guidance == 0:
            x0 = d_for(x, s, null)
        elif guidance == 1:
            x0 = d_for(x, s, labels)
        else:
            x0 = guide(d_for(x, s, null), d_for(x, s, labels), guidance)
        return x0 if clip is None else x0.clamp(-clip, clip)

    return predict_x0


def sample(
    predictor: X0Predictor,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    sampler: str = "heun",
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Integrate from ``x`` (B, ...) at s = sigmas[0] down the step levels ``sigmas`` (ending in 0); returns x0.

    ``x`` is on the s-axis: x = x_t / alpha, e.g. ``sigmas[0] * randn``. ``eta`` (ddim only) needs ``generator``."""
    if sampler not in SAMPLERS:
        raise unknown_name("sampler", sampler, SAMPLERS)
    if eta != 0 and sampler != "ddim":
        raise DifflossError(f"eta applies to the ddim sampler only, not {sampler!r}")
    if eta != 0 and generator is None:
        raise DifflossError("ddim with eta > 0 draws noise: pass a torch.Generator")
    sig = [float(v) for v in sigmas]
    if sig[-1] != 0 or any(b >= a for a, b in zip(sig, sig[1:])):
        raise DifflossError("sigmas must decrease strictly and end in 0")

    def d_of(x: torch.Tensor, s: float) -> torch.Tensor:
        return (x - predictor(x, torch.full((x.shape[0],), s, dtype=x.dtype, device=x.device))) / s

    for s, s_next in tqdm(list(zip(sig, sig[1:])), disable=not progress, desc=f"sampling ({sampler})"):
        d = d_of(x, s)
        if sampler == "ddim":
            s_up = min(s_next, eta * math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
            x = x + (math.sqrt(s_next**2 - s_up**2) - s) * d
            if s_up > 0:
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device)
                x = x + s_up * noise.to(x.device)
        elif sampler == "euler" or s_next == 0:
            x = x + (s_next - s) * d
        elif sampler == "heun":
            x_euler = x + (s_next - s) * d
            x = x + (s_next - s) * (d + d_of(x_euler, s_next)) / 2
        else:  # dpm2
            s_mid = math.sqrt(s * s_next)
            x = x + (s_next - s) * d_of(x + (s_mid - s) * d, s_mid)
    return x


def generate(
    predictor: X0Predictor,
    shape: tuple[int, ...],
    *,
    process: Process,
    steps: int,
    generator: torch.Generator,
    sampler: str = "heun",
    spacing: str = "karras",
    eta: float = 0.0,
    dtype: torch.dtype = torch.float32,
    batch: int | None = None,
    progress: bool = False,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """``shape[0]`` samples: x = s_max * N(0, I) from ``generator`` for every row first, then ``sample`` over
    ``step_levels``, ``batch`` rows at a time (default: all at once). With a deterministic sampler (eta = 0) the
    result does not depend on ``batch`` beyond floating-point rounding. With ``labels`` (shape[0],) the
    ``predictor`` is a ``LabelledX0Predictor`` and each row is sampled with its label."""
    sigmas = step_levels(process, steps, spacing)
    x = sigmas[0].item() * torch.randn(shape, generator=generator, dtype=dtype, device=generator.device)
    batch = batch or shape[0]

    def rows_predictor(i: int) -> X0Predictor:
        if labels is None:
            return predictor
        return lambda x, s: predictor(x, s, labels[i : i + batch].to(x.device))

    chunks = [
        sample(
            rows_predictor(i),
            x[i : i + batch],
            sigmas,
            sampler=sampler,
            eta=eta,
            generator=generator,
            progress=progress,
        )
        for i in range(0, shape[0], batch)
    ]
    return torch.cat(chunks)


def sample_model(
    model: DiffusionModel,
    n: int,
    *,
    steps: int,
    sampler: str,
    seed: int,
    spacing: str = "karras",
    eta: float = 0.0,
    batch: int = 256,
    progress: bool = False,
    clip: float | None = None,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
) -> torch.Tensor:
    """``n`` samples (n, *shape) float32 of a loaded model (``diffloss.loader``) in the data's scaled units.

    ``generate`` with ``torch.Generator().manual_seed(seed)``, ``batch`` rows at a time, without gradients; the
    same seed gives the same samples. ``clip``: see ``x0_predictor``. ``labels`` (n,) class labels of a
    class-conditional model sample each row from its class with guidance ``guidance`` (``guided_x0_predictor``);
    without them a conditional model samples unconditionally (the null label)."""
    if n < 1 or batch < 1:
        raise DifflossError(f"--n and --batch must be >= 1, got {n} and {batch}")
    if labels is not None and not model.num_classes:
        raise DifflossError("the model is unconditional (trained without --conditional): sample it without --class")
    if labels is None:
        predictor = x0_predictor(model.network, model.process, model.target, model.cond, clip)
    else:
        predictor = guided_x0_predictor(
            model.network, model.process, model.target, model.num_classes, guidance, model.cond, clip
        )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return generate(
            predictor,
            (n, *model.shape),
            process=model.process,
            steps=steps,
            generator=generator,
            sampler=sampler,
            spacing=spacing,
            eta=eta,
            batch=batch,
            progress=progress,
            labels=labels,
        )
