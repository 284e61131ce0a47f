"""The diffusion training loss as one pure function, usable from any training loop."""

from __future__ import annotations

import torch

from diffloss.density import LevelDensity
from diffloss.levels import Levels, TargetPredictor, model_condition
from diffloss.process import Process
from diffloss.target import Target, expand_like
from diffloss.weighting import Weighting


def diffusion_loss(
    model: TargetPredictor,
    x0: torch.Tensor,
    *,
    process: Process,
    target: Target,
    weighting: Weighting,
    density: LevelDensity,
    generator: torch.Generator,
    cond: str = "t",
    noise: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    levels: Levels | None = None,
) -> tuple[torch.Tensor, Levels]:
    """Per-sample weighted denoising loss of a batch ``x0`` of shape (B, ...).

    Draws B levels from ``density`` (unless ``levels`` is given) and then (unless ``noise`` is given)
    eps ~ N(0, I) of x0's shape, both from ``generator`` in that order; forms x_t = alpha * x0 + sigma * eps and
    calls ``model(x_t, c)``, where c is the (B,) level condition named by ``cond`` (``t``, ``sigma`` =
    s = sigma / alpha, ``logsnr`` or ``timestep``; see ``diffloss.levels``) on x0's device, in x0's dtype (int64
    for discrete timesteps). The model returns its prediction of ``target`` (x0, eps, v, score or flow velocity),
    shaped like x0. With ``labels`` (B,) int64 class labels (a class-conditional model, ``diffloss.classes``) the
    call is ``model(x_t, c, labels)``; label dropout, if any, is the caller's (``diffloss.classes.drop_labels``).

    Returns ``(loss, levels)``: ``loss`` (B,) is w_target(lambda) * mean over the D entries of each sample of
    (prediction - target)^2 (a per-dimension mean, like ``F.mse_loss``), with the weight of ``weighting`` for
    ``target``; reduce it yourself (``loss.mean()``). ``levels`` holds the t, lambda (and steps) drawn.
    """
    if levels is None:
        levels = density.sample(x0.shape[0], generator, process)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=generator.device).to(x0.device)
    a, s = (expand_like(v.to(x0.device), x0) for v in process.alpha_sigma(levels.t))
    x_t = a * x0 + s * noise
    c = model_condition(levels, process, cond, x0)
    pred = model(x_t, c) if labels is None else model(x_t, c, labels.to(x0.device))
    y = target.value(x0, noise, a, s)
    w = weighting.weight(levels.logsnr, process, target).to(device=x0.device, dtype=x0.dtype)
    return w * (pred - y).pow(2).flatten(1).mean(1), levels
