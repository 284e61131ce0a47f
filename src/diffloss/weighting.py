"""Loss weights w(lambda), each defined once, as its x0-equivalent, and expressed for any target.

A weighting multiplies the per-dimension squared error of a prediction target T at log-SNR lambda. Since
MSE_T = factor_T * MSE_x0 with factor_T = (c_x - c_eps * alpha / sigma)^2 (``Target.loss_factor``), a weight is
one function of lambda on the x0 loss, w_x0, and on target T it is w_T = w_x0 / factor_T. Each scheme below
states w_x0 and the target in which its formula is published; the published formula is then one case of
``weight(lam, process, target)``, and its v-prediction or flow versions cannot drift apart from it.

Scheme: w_x0 (SNR = e^lambda, s = e^(-lambda/2), sd = sigma_data) -- as published -- source.

- ``constant``: factor_on (1 for on=x0) -- 1 on target ``on`` (``on=flow``: plain flow matching).
- ``snr``: SNR -- SNR on x0, i.e. 1 on eps (DDPM's L_simple) -- Salimans & Ho 2022.
- ``truncated-snr``: max(SNR, 1) -- the same on x0 -- Salimans & Ho 2022.
- ``min-snr``: min(SNR, gamma) -- the same on x0 (gamma = 5) -- Hang et al. 2023.
- ``soft-min-snr``: gamma SNR / (gamma + SNR) -- (s sd)^2 / (s^2 + sd^2)^2 on EDM's preconditioned output F
  with gamma = 1 / sd^2 -- Crowson et al. 2024 (k-diffusion).
- ``p2``: SNR / (k + SNR)^gamma -- 1 / (k + SNR)^gamma on eps -- Choi et al. 2022.
- ``edm``: SNR + 1 / sd^2 -- (s^2 + sd^2) / (s sd)^2 on x0 -- Karras et al. 2022.
- ``debiased``: sqrt(SNR) -- 1 / sqrt(SNR) on eps -- Yu et al. 2024.
- ``sigmoid`` (VDM++): e^b sigmoid(lambda - b) -- sigmoid(b - lambda) on eps -- Kingma & Gao 2023.
- ``optimal``: a min(1/J*, w_max) + Gaussian bump in ln s below s* -- the same on x0 -- Xu et al. 2025
  (``diffloss.optimal_weight``; needs the J* table of the data).

Consequences users get wrong in the wild: min-SNR-5 on v (VP) is min(SNR, 5) / (SNR + 1), not
min(SNR, 5) / SNR; debiased on v (VP) is sqrt(SNR) / (SNR + 1) and on the flow velocity t(1 - t).
Weights are exactly the formulas: nothing is normalized.

``implied_elbo_weight`` combines a weighting with a level density into Kingma & Gao's w(lambda), the weight per
unit log-SNR on the eps-MSE that the training objective amounts to (what plots compare).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch

from diffloss.config import build, config_from_dict, config_to_dict, parse_spec
from diffloss.density import LevelDensity
from diffloss.errors import DifflossError, unknown_name
from diffloss.optimal_weight import OptimalWeightParams
from diffloss.process import Process, Tensorish, as_f64
from diffloss.target import Target, get_target


@dataclass(frozen=True)
class Weighting(ABC):
    """A loss weight as a function of log-SNR. Subclasses are frozen dataclasses whose fields are parameters."""

    name: ClassVar[str]
    PUBLISHED: ClassVar[str]  # the target in which the formula is published
    FORMULA: ClassVar[str]  # the published formula, as text

    @abstractmethod
    def x0_weight(self, lam: torch.Tensor, process: Process) -> torch.Tensor:
        """w_x0(lambda): the weight on the per-dimension x0 MSE (float64)."""

    @property
    def published(self) -> str:
        """Name of the target in which the formula is published."""
        return self.PUBLISHED

    def weight(self, lam: Tensorish, process: Process, target: Target | str) -> torch.Tensor:
        """The weight on the per-dimension MSE of ``target`` at log-SNRs ``lam``: w_x0 / factor_target.

        Raises DifflossError for log-SNRs the process never reaches (the weighting is undefined there)."""
        lam = as_f64(lam)
        target = get_target(target) if isinstance(target, str) else target
        lo, hi = process.logsnr_range()
        bad = torch.isnan(lam) | (lam < lo) | (lam > hi)
        if bad.any():
            raise DifflossError(
                f"weighting {self.name!r} is undefined at log-SNR {lam[bad][0].item():g} for process "
                f"{process.name!r}: the process only reaches [{lo:.4g}, {hi:.4g}]; pick log-SNRs inside it"
            )
        a, s = process.alpha_sigma_of_logsnr(lam)
        return self.x0_weight(lam, process) / target.loss_factor(a, s)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


def _positive(scheme: str, **values: float) -> None:
    for key, v in values.items():
        if not v > 0:
            raise DifflossError(f"weighting {scheme!r} needs {key} > 0, got {v}")


@dataclass(frozen=True)
class Constant(Weighting):
    """Weight 1 on the MSE of target ``on`` (x0 by default); e.g. ``on=flow`` is plain flow matching."""

    name: ClassVar[str] = "constant"
    PUBLISHED: ClassVar[str] = "x0"
    FORMULA: ClassVar[str] = "1 on target `on`"
    on: str = "x0"

    def __post_init__(self) -> None:
        object.__setattr__(self, "on", get_target(self.on).name)

    @property
    def published(self) -> str:
        return self.on

    def x0_weight(self, lam, process):
        return get_target(self.on).loss_factor(*process.alpha_sigma_of_logsnr(lam)).expand_as(lam).clone()


@dataclass(frozen=True)
class SNR(Weighting):
    name: ClassVar[str] = "snr"
    PUBLISHED: ClassVar[str] = "x0"
    FORMULA: ClassVar[str] = "SNR on x0 (= 1 on eps)"

    def x0_weight(self, lam, process):
        return torch.exp(lam)


@dataclass(frozen=True)
class TruncatedSNR(Weighting):
    name: ClassVar[str] = "truncated-snr"
    PUBLISHED: ClassVar[str] = "x0"
    FORMULA: ClassVar[str] = "max(SNR, 1) on x0"

    def x0_weight(self, lam, process):
        return torch.exp(lam.clamp(min=0))


@dataclass(frozen=True)
class MinSNR(Weighting):
    name: ClassVar[str] = "min-snr"
    PUBLISHED: ClassVar[str] = "x0"
    FORMULA: ClassVar[str] = "min(SNR, gamma) on x0"
    gamma: float = 5.0

    def __post_init__(self) -> None:
        _positive(self.name, gamma=self.gamma)

    def x0_weight(self, lam, process):
        return torch.exp(lam.clamp(max=math.log(self.gamma)))


@dataclass(frozen=True)
class SoftMinSNR(Weighting):
    """The harmonic soft minimum of SNR and gamma; k-diffusion's ``soft-min-snr`` with gamma = 1 / sigma_data^2."""

    name: ClassVar[str] = "soft-min-snr"
    PUBLISHED: ClassVar[str] = "x0"
    FORMULA: ClassVar[str] = "gamma*SNR/(gamma+SNR) on x0 = (s*sd)^2/(s^2+sd^2)^2 on EDM's F-target, gamma=1/sd^2"
    gamma: float = 4.0

    def __post_init__(self) -> None:
        _positive(self.name, gamma=self.gamma)

    def x0_weight(self, lam, process):
        return self.gamma * torch.sigmoid(lam - math.log(self.gamma))


@dataclass(frozen=True)
class P2(Weighting):
    name: ClassVar[str] = "p2"
    PUBLISHED: ClassVar[str] = "eps"
    FORMULA: ClassVar[str] = "1/(k+SNR)^gamma on eps"
    k: float = 1.0
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.k < 0 or self.gamma < 0:
            raise DifflossError(f"weighting 'p2' needs k >= 0 and gamma >= 0, got k={self.k}, gamma={self.gamma}")

    def x0_weight(self, lam, process):
        return torch.exp(lam - self.gamma * torch.log(self.k + torch.exp(lam)))


@dataclass(frozen=True)
class EDMWeight(Weighting):
    name: ClassVar[str] = "edm"
    PUBLISHED: ClassVar[str] = "x0"
    FORMULA: ClassVar[str] = "(s^2+sigma_data^2)/(s*sigma_data)^2 on x0"
    sigma_data: float = 0.5

    def __post_init__(self) -> None:
        _positive(self.name, sigma_data=self.sigma_data)

    def x0_weight(self, lam, process):
        return torch.exp(lam) + self.sigma_data**-2


@dataclass(frozen=True)
class Debiased(Weighting):
    name: ClassVar[str] = "debiased"
    PUBLISHED: ClassVar[str] = "eps"
    FORMULA: ClassVar[str] = "1/sqrt(SNR) on eps"

    def x0_weight(self, lam, process):
        return torch.exp(lam / 2)


@dataclass(frozen=True)
class Sigmoid(Weighting):
    """VDM++'s sigmoid weighting, sigmoid(b - lambda) on the eps-MSE.

    Kingma & Gao state it as the weight per unit lambda; as a per-sample weight it is that exactly when levels
    are drawn uniformly in lambda (see ``implied_elbo_weight`` for any other density)."""

    name: ClassVar[str] = "sigmoid"
    PUBLISHED: ClassVar[str] = "eps"
    FORMULA: ClassVar[str] = "sigmoid(bias - lambda) on eps"
    bias: float = 0.0

    def x0_weight(self, lam, process):
        return math.exp(self.bias) * torch.sigmoid(lam - self.bias)


@dataclass(frozen=True)
class OptimalWeight(OptimalWeightParams, Weighting):
    """Xu et al.'s optimal-loss-based weight (formula and parameters: ``diffloss.optimal_weight``)."""

    name: ClassVar[str] = "optimal"
    PUBLISHED: ClassVar[str] = "x0"
    FORMULA: ClassVar[str] = "a*min(1/J*, w_max) + h*exp(-(ln s - ln c)^2/(2 b^2))*[s < s*] on x0"

    def x0_weight(self, lam, process):
        return self.optimal_weight(lam)


WEIGHTINGS: dict[str, type[Weighting]] = {
    c.name: c
    for c in (Constant, SNR, TruncatedSNR, MinSNR, SoftMinSNR, P2, EDMWeight, Debiased, Sigmoid, OptimalWeight)
}
_ALIASES = {"vdm++": "sigmoid", "min-snr-gamma": "min-snr", "max-snr": "truncated-snr", "none": "constant"}


def get_weighting(name: str, **params: Any) -> Weighting:
    """A weighting by name (see the module table) and parameters; string values are converted to the parameter's
    type (``get_weighting("min-snr", gamma="5")``)."""
    return build(WEIGHTINGS, "weighting", name, params, _ALIASES)


def weighting_params(name: str) -> tuple[str, ...]:
    """The parameter names of the weighting called ``name`` (or an alias of it)."""
    key = _ALIASES.get(name, name)
    if key not in WEIGHTINGS:
        raise unknown_name("weighting", name, WEIGHTINGS)
    return tuple(f.name for f in fields(WEIGHTINGS[key]))


def weighting_from_dict(d: dict[str, Any]) -> Weighting:
    """Inverse of ``Weighting.to_dict``."""
    return config_from_dict(WEIGHTINGS, "weighting", d, _ALIASES)


def weighting_from_spec(spec: str) -> Weighting:
    """``"name[:key=value,...]"``, e.g. ``"min-snr:gamma=5"``."""
    name, params = parse_spec(spec)
    return get_weighting(name, **params)


def implied_elbo_weight(weighting: Weighting, density: LevelDensity, process: Process, lam: Tensorish) -> torch.Tensor:
    """Kingma & Gao's w(lambda) = 2 p(lambda) w_eps(lambda) of drawing levels from ``density`` and weighting by
    ``weighting``: the expected loss is (1/2) * integral of w(lambda) * E[MSE_eps(lambda)] d lambda, and w = 1 is
    the ELBO (up to a constant). Zero outside the density's support."""
    lam = as_f64(lam)
    p = density.log_prob(lam, process).exp()
    out = torch.zeros_like(lam)
    inside = p > 0
    out[inside] = 2 * p[inside] * weighting.weight(lam[inside], process, "eps")
    return out
