"""The optimal-loss-based weight of Xu et al. (arXiv 2506.13763): its formula, parameters and J* table.

Conventions: s = sigma / alpha is the noise-to-signal ratio, lambda = log SNR = -2 ln s, and J*(s) is the
optimal loss as a per-dimension x0 MSE (``OptimalLossResult.x0_mse``). The loss weight, on the x0 MSE, is

    w(s) = a * min(1 / J*(s), w_max) + h * exp(-(ln s - ln c)^2 / (2 b^2)) * 1[s < s*]

with a = ``a``, w_max = ``w_max``, bump centre c = ``bump_center``, width b = ``bump_width`` (in ln s), height
h = ``bump_height`` and cut-off s* = ``sigma_star``. J* between the tabulated levels is interpolated linearly in
ln s (= linearly in lambda) and held constant beyond the table's ends.

``OptimalWeightParams`` holds these parameters and the table; the ``optimal`` weighting (diffloss.weighting) and
the ``optimal`` level density (diffloss.density) both derive from it, so the formula exists once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffloss.errors import DifflossError


@dataclass(frozen=True)
class OptimalWeightParams:
    """Parameters of w(s) and the J* table (``jstar_logsnr`` increasing log-SNRs, ``jstar`` x0 MSE per dimension).

    The table is filled from an ``OptimalLossResult`` or a ``diffloss optimal-loss --json`` file by
    ``diffloss.optimal.reference`` (``diffloss train`` does it for you)."""

    a: float = 1.0
    w_max: float = 1e4
    bump_center: float = 0.05
    bump_width: float = 0.5
    bump_height: float = 1e3
    sigma_star: float = 0.2
    jstar_logsnr: tuple[float, ...] = ()
    jstar: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        what = "the optimal-loss weight"
        for key in ("a", "w_max", "bump_center", "bump_width", "sigma_star"):
            if not getattr(self, key) > 0:
                raise DifflossError(f"{what} needs {key} > 0, got {getattr(self, key)}")
        if self.bump_height < 0:
            raise DifflossError(f"{what} needs bump_height >= 0, got {self.bump_height}")
        lam, j = self.jstar_logsnr, self.jstar
        if len(lam) < 2 or len(lam) != len(j):
            raise DifflossError(
                f"{what} needs a J* table (jstar_logsnr, jstar) of >= 2 levels; pass --optimal-loss "
                "FILE.json (from `diffloss optimal-loss --json`) or let `diffloss train` compute it"
            )
        if any(hi <= lo for lo, hi in zip(lam, lam[1:])) or not all(math.isfinite(v) and v >= 0 for v in j):
            raise DifflossError(f"{what} needs increasing jstar_logsnr and finite jstar >= 0")

    def optimal_loss(self, lam: torch.Tensor) -> torch.Tensor:
        """J*(lambda), x0 MSE per dimension, interpolated linearly in lambda (= in ln s); ends held constant."""
        xs = torch.tensor(self.jstar_logsnr, dtype=torch.float64)
        ys = torch.tensor(self.jstar, dtype=torch.float64)
        lam = lam.to(torch.float64).clamp(xs[0], xs[-1])
        i = (torch.searchsorted(xs, lam, right=True) - 1).clamp(0, len(xs) - 2)
        frac = (lam - xs[i]) / (xs[i + 1] - xs[i])
        return ys[i] + frac * (ys[i + 1] - ys[i])

    def optimal_weight(self, lam: torch.Tensor) -> torch.Tensor:
        """w(lambda) on the per-dimension x0 MSE (float64), the formula of the module docstring."""
        lam = lam.to(torch.float64)
        log_s = -lam / 2
        capped = torch.minimum(1 / self.optimal_loss(lam), torch.tensor(self.w_max, dtype=torch.float64))
        bump = self.bump_height * torch.exp(-((log_s - math.log(self.bump_center)) ** 2) / (2 * self.bump_width**2))
        return self.a * capped + bump * (log_s < math.log(self.sigma_star))
