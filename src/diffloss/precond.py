"""EDM preconditioning (Karras et al. 2022, Table 1), for every process: only s = sigma / alpha matters.

With x~ = x_t / alpha = x0 + s * eps and sd = sigma_data, the denoiser is

    D(x~; s) = c_skip * x~ + c_out * F(c_in * x~; c_noise),

    c_skip = sd^2 / (s^2 + sd^2),  c_out = s * sd / sqrt(s^2 + sd^2),  c_in = 1 / sqrt(s^2 + sd^2),
    c_noise = ln(s) / 4,

so the network F sees unit-variance inputs and is trained on its effective target
F_target = (x0 - c_skip * x~) / c_out, which has unit variance too when the data has variance sd^2. Since
D - x0 = c_out * (F - F_target), a weight w_x0 on the x0 loss is the weight w_x0 * c_out^2 on the loss of F, and
EDM's weight lambda = 1 / c_out^2 (``diffloss.weighting.EDMWeight``) gives F unit weight at every level.

Preconditioning names (``PRECONDS``): ``none`` (the network predicts its raw target; the input scaling c_in and
the noise label c_noise are applied all the same) and ``edm`` (the network is F above and its output is D,
expressed as a prediction of the training target: ``output_coefficients``).
"""

from __future__ import annotations

import torch

from diffloss.errors import DifflossError, unknown_name
from diffloss.process import Tensorish, as_f64
from diffloss.target import Target

PRECONDS: tuple[str, ...] = ("none", "edm")


def check_precond(name: str) -> str:
    """``name`` if it is one of ``PRECONDS``, else the one-line unknown-name error."""
    if name not in PRECONDS:
        raise unknown_name("preconditioning (--precond)", name, PRECONDS)
    return name


def edm_precond(s: Tensorish, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) at noise-to-signal ratios ``s`` (float64, s's shape); c_in scales x~."""
    s = as_f64(s)
    var = s**2 + sigma_data**2
    return sigma_data**2 / var, s * sigma_data / torch.sqrt(var), 1 / torch.sqrt(var), torch.log(s) / 4


def output_coefficients(
    precond: str, target: Target | None, alpha: torch.Tensor, sigma: torch.Tensor, sigma_data: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_x, a_F) such that the model's prediction of ``target`` is a_x * x_t + a_F * F (float64, alpha's shape).

    ``none``: (0, 1), F is the prediction. ``edm``: the target's prediction implied by the x0 prediction D (see the
    module docstring), ``target.from_x0(D, x_t)``, which is linear in (D, x_t); computing its coefficients per level
    in float64 avoids the cancellation of x_t - alpha * D at small s (eps, v, score, flow targets)."""
    if check_precond(precond) == "none":
        return torch.zeros_like(alpha), torch.ones_like(alpha)
    if target is None:
        raise DifflossError("edm preconditioning needs the target the output predicts")
    c_skip, c_out, _, _ = edm_precond(sigma / alpha, sigma_data)
    one, zero = torch.ones_like(alpha), torch.zeros_like(alpha)
    return target.from_x0(c_skip / alpha, one, alpha, sigma), target.from_x0(c_out, zero, alpha, sigma)


def default_recipe(process: str, sigma_data: float) -> dict[str, str | None]:
    """``diffloss train``'s values for ``target``, ``weighting`` and ``precond`` when they are not given: EDM's full
    recipe on process ``edm`` (x0 target, EDM weight 1 / c_out^2 with this sigma_data, edm preconditioning; its
    density, edm-lognormal, is the process's default already), else the eps target with its plain MSE (weighting
    None: ``constant:on=TARGET``) and no preconditioning."""
    if process == "edm":
        return {"target": "x0", "weighting": f"edm:sigma_data={sigma_data!r}", "precond": "edm"}
    return {"target": "eps", "weighting": None, "precond": "none"}
