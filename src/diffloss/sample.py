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
- ``edm``: EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): noise first raises s to s_hat = s (1 + gamma)
  (``Churn``), then the ``heun`` step runs from s_hat to s'; with S_churn = 0 it is ``heun`` exactly.
- ``ddpm``, ``ddpm-large``: DDPM's ancestral sampler (Ho et al. 2020) on the chain that keeps only the step levels
  (Nichol & Dhariwal's respacing, ``ddpm_posterior``), with the "fixed small" posterior variance beta tilde or the
  "fixed large" beta. ``generate`` steps it through the ``respaced`` levels: K evenly spaced steps of the T-step
  discrete VP chain (``respaced_timesteps``), which needs a discrete VP process. One model call per step.

Random numbers of ``generate`` (and so of ``sample_model`` and ``diffloss sample``), drawn on the CPU whatever the
device, so that a seed gives the same samples on a CPU, on a GPU and on any number of torchrun processes (up to
floating-point rounding):

- the starting noise of all n rows: ``torch.randn((n, *shape))`` from ``torch.Generator().manual_seed(seed)``;
- the noise a stochastic sampler adds on a step (ddim with eta > 0, edm with S_churn > 0, ddpm): row i (0-based,
  of the n) draws it from its own stream ``numpy.random.default_rng([seed mod 2^64, i])`` (``RowNoise``), one
  standard-normal sample of the row's shape per noisy step, in step order.

So row i's sample depends on the seed, i and the settings only, not on ``--batch``, on the rows that other
processes handle, or on the device. Inside the per-step loop the host never waits for the device: the levels are
host floats, the noise and the few per-level numbers the network needs travel to the device without blocking.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from diffloss.classes import guide
from diffloss.device import World
from diffloss.errors import DifflossError, unknown_name
from diffloss.levels import Levels, TargetPredictor, model_condition
from diffloss.process import Process
from diffloss.shards import gather_rows, rank_rows
from diffloss.target import Target, expand_like

if TYPE_CHECKING:
    from diffloss.loader import DiffusionModel

X0Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""D(x, s) -> x0_hat for x = x0 + s * eps of shape (B, ...) and s of shape (B,) in x's dtype, on the CPU (``sample``
passes host levels: the predictor reads them without waiting for the device) or on x's device."""

LabelledX0Predictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""D(x, s, labels) -> x0_hat: an ``X0Predictor`` for rows of (B,) int64 class labels (``diffloss.classes``)."""

SAMPLERS: tuple[str, ...] = ("ddim", "euler", "heun", "dpm2", "edm", "ddpm", "ddpm-large")
DDPM_SAMPLERS: tuple[str, ...] = ("ddpm", "ddpm-large")
STEP_SPACINGS: tuple[str, ...] = ("karras", "uniform-t", "log", "respaced")


@dataclass(frozen=True)
class Churn:
    """The noise of EDM's stochastic sampler (Karras et al. 2022, Algorithm 2), used by the ``edm`` sampler.

    On a step from s (of N steps in all), gamma = min(S_churn / N, sqrt(2) - 1) if S_tmin <= s <= S_tmax, else 0;
    then s_hat = s (1 + gamma) and x_hat = x + sqrt(s_hat^2 - s^2) * S_noise * eps. The defaults are Algorithm 2's
    neutral values (S_churn = 0: no noise, the ``heun`` sampler). EDM's settings for its ImageNet-64 model are
    S_churn = 40, S_tmin = 0.05, S_tmax = 50, S_noise = 1.003 (EDM's README; Table 5 of the paper lists others).
    ``x0_predictor`` clamps an s_hat beyond the largest level the process reaches to that level; with S_tmax = 50
    s_hat stays below EDM's s_max = 80."""

    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0

    def __post_init__(self) -> None:
        if not self.s_churn >= 0:
            raise DifflossError(f"S_churn (--s-churn) must be >= 0, got {self.s_churn}")
        if not 0 < self.s_noise < math.inf:
            raise DifflossError(f"S_noise (--s-noise) must be > 0 and finite, got {self.s_noise}")
        if not 0 <= self.s_tmin <= self.s_tmax:
            raise DifflossError(f"S_tmin and S_tmax (--s-tmin, --s-tmax) need 0 <= S_tmin <= S_tmax, got "
                                f"{self.s_tmin}, {self.s_tmax}")  # fmt: skip

    def gamma(self, s: float, steps: int) -> float:
        """The relative increase of the level s on a step of a sampler with ``steps`` steps."""
        return min(self.s_churn / steps, math.sqrt(2) - 1) if self.s_tmin <= s <= self.s_tmax else 0.0


NO_CHURN = Churn()


class RowNoise:
    """One standard-normal stream per row: row i of a sampling run with seed ``seed`` draws from
    ``numpy.random.default_rng([seed mod 2^64, i])``. ``rows`` are the (global) indices of the rows at hand, so a
    batch or a process holding rows 100 .. 199 draws exactly what a single pass over all rows draws for them."""

    def __init__(self, seed: int, rows: range) -> None:
        self.streams = [np.random.default_rng([seed % 2**64, i]) for i in rows]

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        """The next draw of every row, shaped like ``x`` (one row per stream), in x's dtype, on the CPU."""
        if len(x) != len(self.streams):
            raise DifflossError(f"noise for {len(x)} rows asked of {len(self.streams)} row streams")
        kind = np.float64 if x.dtype == torch.float64 else np.float32
        draws = [g.standard_normal(tuple(x.shape[1:]), dtype=kind) for g in self.streams]
        return torch.from_numpy(np.stack(draws)).to(x.dtype)


class DDPMPosterior(NamedTuple):
    """The reverse step of a DDPM chain from alpha_bar (at s) to alpha_bar_prev (at s_next), in x_t units."""

    beta: float  # 1 - alpha_bar / alpha_bar_prev, the chain's beta on this step
    c_x0: float  # posterior mean = c_x0 * x0 + c_xt * x_t
    c_xt: float
    beta_tilde: float  # the posterior variance beta * (1 - alpha_bar_prev) / (1 - alpha_bar)


def ddpm_posterior(s: float, s_next: float) -> DDPMPosterior:
    """q(x_{t-1} | x_t, x0) of the VP chain that steps from noise-to-signal ratio s to s_next < s.

    On VP, alpha_bar = 1 / (1 + s^2); a chain that keeps only some levels of a longer one (Nichol & Dhariwal's
    respacing) has beta = 1 - alpha_bar / alpha_bar_prev between kept neighbours, and the posterior of Ho et al.
    (eq. 7) with that beta. Written in s so that 1 - alpha_bar = s^2 / (1 + s^2) keeps its digits at small s.
    s_next = 0 (alpha_bar_prev = 1) gives c_x0 = 1, c_xt = 0, beta_tilde = 0: the last step returns x0."""
    one_minus_ab, one_minus_ab_prev = s**2 / (1 + s**2), s_next**2 / (1 + s_next**2)
    beta = (s**2 - s_next**2) / (1 + s**2)
    return DDPMPosterior(
        beta=beta,
        c_x0=beta / math.sqrt(1 + s_next**2) / one_minus_ab,
        c_xt=math.sqrt(1 - beta) * one_minus_ab_prev / one_minus_ab,
        beta_tilde=beta * one_minus_ab_prev / one_minus_ab,
    )


def ddpm_step(
    x: torch.Tensor, x0: torch.Tensor, s: float, s_next: float, noise: torch.Tensor | None, large: bool = False
) -> torch.Tensor:
    """One step of DDPM's ancestral sampler from s to s_next, on the s axis (x = x_t / alpha, x0 the estimate).

    In x_t = alpha x (alpha = 1 / sqrt(1 + s^2)): x_{t-1} = c_x0 x0 + c_xt x_t + sqrt(v) noise, with v the
    "fixed small" variance beta tilde, or with ``large`` the "fixed large" beta (guided-diffusion's
    ``fixed_small`` / ``fixed_large``); ``noise`` ~ N(0, I) like x, None on the last step (s_next = 0), which
    adds none. Returns x_{t-1} / alpha_prev."""
    post = ddpm_posterior(s, s_next)
    x_prev = post.c_x0 * x0 + post.c_xt * x / math.sqrt(1 + s**2)
    if noise is not None:
        x_prev = x_prev + math.sqrt(post.beta if large else post.beta_tilde) * noise
    return x_prev * math.sqrt(1 + s_next**2)


def respaced_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` evenly spaced 0-based timesteps of a T-step chain, T - 1 down to 0, rounded (guided-diffusion's
    ``space_timesteps`` with one section; one step keeps T - 1 alone)."""
    if not 1 <= steps <= T:
        raise DifflossError(f"respacing a chain of T = {T} steps takes 1 to {T} steps, got {steps}")
    if steps == 1:
        return [T - 1]
    return [round(i * (T - 1) / (steps - 1)) for i in reversed(range(steps))]


def respaced_levels(process: Process, steps: int) -> torch.Tensor:
    """s = sqrt((1 - alpha_bar) / alpha_bar) at the ``respaced_timesteps`` of a discrete VP process's chain
    (``alphas_cumprod``), then 0; float64, ``steps + 1`` values."""
    if not getattr(process, "discrete", False):
        raise DifflossError(
            f"the respaced DDPM chain (the ddpm samplers' steps) needs a discrete VP process (vp or vp-cosine with "
            f"discrete=True, e.g. a diffusers model), not {process}"
        )
    alpha_bar = process.alphas_cumprod()[respaced_timesteps(process.T, steps)]
    return torch.cat([((1 - alpha_bar) / alpha_bar).sqrt(), torch.zeros(1, dtype=torch.float64)])


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
    range defaults to EDM's [0.002, 80] clipped to what the process reaches. ``respaced``: the levels of
    ``respaced_levels`` (a discrete VP chain's own range; rho and the range do not apply)."""
    if steps < 1:
        raise DifflossError(f"steps must be >= 1, got {steps}")
    if spacing == "respaced":
        return respaced_levels(process, steps)
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
        a, sg = (expand_like(v.to(x.device, non_blocking=True), x) for v in process.alpha_sigma(levels.t))
        x_t = a * x
        x0 = target.to_x0_eps(model(x_t, model_condition(levels, process, cond, x, host=True)), x_t, a, sg)[0]
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
    churn: Churn = NO_CHURN,
    generator: torch.Generator | RowNoise | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Integrate from ``x`` (B, ...) at s = sigmas[0] down the step levels ``sigmas`` (ending in 0); returns x0.

    ``x`` is on the s-axis: x = x_t / alpha, e.g. ``sigmas[0] * randn``; it may live on any device, and the
    predictor receives s as a host tensor. ``eta`` (ddim only) and ``churn`` (edm only); a sampler that draws noise
    (ddim with eta > 0, edm with S_churn > 0, ddpm) needs ``generator``: a ``torch.Generator`` (noise for the whole
    batch, on the generator's device) or a ``RowNoise`` (a stream per row, on the CPU). The ddpm samplers take any
    levels as the chain to step through (``ddpm_posterior``)."""
    if sampler not in SAMPLERS:
        raise unknown_name("sampler", sampler, SAMPLERS)
    if eta != 0 and sampler != "ddim":
        raise DifflossError(f"eta applies to the ddim sampler only, not {sampler!r}")
    if churn != NO_CHURN and sampler != "edm":
        raise DifflossError(f"S_churn, S_tmin, S_tmax and S_noise apply to the edm sampler only, not {sampler!r}")
    if generator is None and (eta != 0 or churn.s_churn > 0 or sampler in DDPM_SAMPLERS):
        raise DifflossError(f"{sampler} with these settings draws noise: pass a torch.Generator or a RowNoise")
    sig = [float(v) for v in sigmas]
    if sig[-1] != 0 or any(b >= a for a, b in zip(sig, sig[1:])):
        raise DifflossError("sigmas must decrease strictly and end in 0")

    def denoise(x: torch.Tensor, s: float) -> torch.Tensor:
        return predictor(x, torch.full((x.shape[0],), s, dtype=x.dtype))

    def d_of(x: torch.Tensor, s: float) -> torch.Tensor:
        return (x - denoise(x, s)) / s

    def noise_like(x: torch.Tensor) -> torch.Tensor:
        if isinstance(generator, RowNoise):
            z = generator.randn_like(x)
        else:
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device)
        return z.to(x.device, non_blocking=True)

    steps = len(sig) - 1
    for s, s_next in tqdm(list(zip(sig, sig[1:])), disable=not progress, desc=f"sampling ({sampler})"):
        if sampler == "edm":
            s_hat = s * (1 + churn.gamma(s, steps))
            if s_hat > s:
                x = x + math.sqrt(s_hat**2 - s**2) * churn.s_noise * noise_like(x)
            s = s_hat
        x0 = denoise(x, s)
        d = (x - x0) / s
        if sampler in DDPM_SAMPLERS:
            x = ddpm_step(x, x0, s, s_next, noise_like(x) if s_next > 0 else None, large=sampler == "ddpm-large")
        elif sampler == "ddim":
            s_up = min(s_next, eta * math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
            x = x + (math.sqrt(s_next**2 - s_up**2) - s) * d
            if s_up > 0:
                x = x + s_up * noise_like(x)
        elif sampler == "euler" or s_next == 0:
            x = x + (s_next - s) * d
        elif sampler in ("heun", "edm"):
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
    seed: int,
    sampler: str = "heun",
    spacing: str | None = None,
    eta: float = 0.0,
    churn: Churn = NO_CHURN,
    dtype: torch.dtype = torch.float32,
    batch: int | None = None,
    progress: bool = False,
    labels: torch.Tensor | None = None,
    rows: range | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The samples ``rows`` (default: all ``shape[0]``) of a run of ``shape[0]`` samples with ``seed``, on ``device``.

    The starting noise x = s_max * N(0, I) of every row comes from ``torch.Generator().manual_seed(seed)`` on the
    CPU, drawn for all rows at once; a stochastic sampler's step noise from the rows' ``RowNoise`` streams (see the
    module docstring). Then ``sample`` over ``step_levels``, ``batch`` rows at a time (default: all at once); the
    result does not depend on ``batch`` or on which rows are asked for beyond floating-point rounding. With
    ``labels`` (shape[0],) the ``predictor`` is a ``LabelledX0Predictor`` and each row is sampled with its label.
    ``spacing`` defaults to ``karras``, and to ``respaced`` (the only one they take) for the ddpm samplers; their
    start s_max * N(0, I) is DDPM's x_T ~ N(0, I) but for a factor sqrt(1 + 1 / s_max^2) (1 + 2e-5 on DDPM's
    linear betas)."""
    default = "respaced" if sampler in DDPM_SAMPLERS else "karras"
    if sampler in DDPM_SAMPLERS and spacing not in (None, default):
        raise DifflossError(f"the {sampler} sampler steps through the respaced DDPM chain: leave the spacing at "
                            f"'respaced' (its default), not {spacing!r}")  # fmt: skip
    sigmas = step_levels(process, steps, spacing or default)
    start = sigmas[0].item() * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    rows = range(shape[0]) if rows is None else rows
    batch = batch or max(1, len(rows))

    def rows_predictor(part: range) -> X0Predictor:
        if labels is None:
            return predictor
        part_labels = labels[part.start : part.stop]  # host labels: the network moves them (DiffusionModel)
        return lambda x, s: predictor(x, s, part_labels)

    chunks = []
    for lo in range(rows.start, rows.stop, batch):
        part = range(lo, min(lo + batch, rows.stop))
        chunks.append(
            sample(
                rows_predictor(part),
                start[part.start : part.stop].to(device, non_blocking=True),
                sigmas,
                sampler=sampler,
                eta=eta,
                churn=churn,
                generator=RowNoise(seed, part),
                progress=progress,
            )
        )
    return torch.cat(chunks) if chunks else start[:0].to(device)


def sample_model(
    model: DiffusionModel,
    n: int,
    *,
    steps: int,
    sampler: str,
    seed: int,
    spacing: str | None = None,
    eta: float = 0.0,
    batch: int = 256,
    progress: bool = False,
    clip: float | None = None,
    labels: torch.Tensor | None = None,
    guidance: float = 1.0,
    churn: Churn = NO_CHURN,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    compile: bool = False,
    world: World | None = None,
) -> torch.Tensor:
    """``n`` samples (n, *shape) float32, on the CPU, of a loaded model (``diffloss.loader``) in the data's scaled
    units.

    ``generate`` with ``seed``, ``batch`` rows at a time, without gradients; the same seed gives the same samples
    on any device and any number of processes (to rounding). ``device`` (default: where the model is), ``precision``
    and ``compile``: see ``DiffusionModel.for_inference``. ``world``: a torchrun group (every rank calls this); each
    rank integrates its ``rank_rows`` of the n and every rank returns all n. ``clip``: see ``x0_predictor`` (with a
    ddpm sampler and 1 for images, DDPM's sampling with ``clip_denoised``); ``spacing``, ``churn``: see
    ``generate``, ``sample``. ``labels`` (n,) class labels of a class-conditional model sample each row from its
    class with guidance ``guidance`` (``guided_x0_predictor``); without them a conditional model samples
    unconditionally (the null label)."""
    if n < 1 or batch < 1:
        raise DifflossError(f"--n and --batch must be >= 1, got {n} and {batch}")
    if labels is not None and not model.num_classes:
        raise DifflossError("the model is unconditional (trained without --conditional): sample it without --class")
    world = world or World()
    model = model.for_inference(device, precision, compile)
    if labels is None:
        predictor = x0_predictor(model.network, model.process, model.target, model.cond, clip)
    else:
        predictor = guided_x0_predictor(
            model.network, model.process, model.target, model.num_classes, guidance, model.cond, clip
        )
    with torch.no_grad():
        x = generate(
            predictor,
            (n, *model.shape),
            process=model.process,
            steps=steps,
            seed=seed,
            sampler=sampler,
            spacing=spacing,
            eta=eta,
            churn=churn,
            batch=batch,
            progress=progress,
            labels=labels,
            rows=rank_rows(n, world),
            device=model.device,
        )
    return gather_rows(x, world).cpu()
