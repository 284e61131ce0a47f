"""Prediction targets, each linear in (x0, eps): y = c_x(alpha, sigma) * x0 + c_eps(alpha, sigma) * eps.

| name    | c_x     | c_eps     | note                                     |
|---------|---------|-----------|------------------------------------------|
| x0      | 1       | 0         | the denoised data                        |
| eps     | 0       | 1         | the noise                                |
| v       | -sigma  | alpha     | Salimans & Ho's v (any process)          |
| score   | 0       | -1/sigma  | grad log p(x_t), i.e. -eps / sigma       |
| flow    | -1      | 1         | velocity u = eps - x0 (rectified flow)   |

A prediction y_hat together with x_t determines an x0 prediction, and the squared error in any target is the
x0 error times ``loss_factor`` = (c_x - c_eps * alpha / sigma)^2. Hence MSE_eps = SNR * MSE_x0,
MSE_v = (SNR + 1) * MSE_x0 on VP, MSE_score = alpha^2 / sigma^4 * MSE_x0, MSE_flow = MSE_x0 / t^2 on flow.

``alpha`` and ``sigma`` must broadcast against the data: for a batch x of shape (B, ...), pass tensors of
shape (B, 1, ..., 1), e.g. ``expand_like(alpha, x)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from diffloss.errors import DifflossError, unknown_name

Coefs = Callable[[torch.Tensor, torch.Tensor], tuple[Any, Any]]

_COEFS: dict[str, Coefs] = {
    "x0": lambda a, s: (1.0, 0.0),
    "eps": lambda a, s: (0.0, 1.0),
    "v": lambda a, s: (-s, a),
    "score": lambda a, s: (0.0, -1.0 / s),
    "flow": lambda a, s: (-1.0, 1.0),
}
_ALIASES = {
    "epsilon": "eps",
    "noise": "eps",
    "sample": "x0",
    "x": "x0",
    "v_prediction": "v",
    "velocity": "flow",
    "u": "flow",
}


def expand_like(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample vector (B,) to (B, 1, ..., 1) so it broadcasts against ``x`` of shape (B, ...)."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    if v.ndim == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class Target:
    """A linear prediction target; serializes as ``{"name": ...}``."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in _COEFS:
            raise unknown_name("target", self.name, _COEFS)

    def coefficients(self, alpha: torch.Tensor, sigma: torch.Tensor) -> tuple[Any, Any]:
        """(c_x, c_eps) at the given alpha, sigma."""
        return _COEFS[self.name](alpha, sigma)

    def value(self, x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The regression target y = c_x * x0 + c_eps * eps."""
        cx, ce = self.coefficients(alpha, sigma)
        return cx * x0 + ce * eps

    def to_x0_eps(
        self, pred: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve x_t = alpha * x0 + sigma * eps and pred = c_x * x0 + c_eps * eps for (x0_hat, eps_hat).

        The system is singular where alpha * c_eps = sigma * c_x (e.g. x0 at sigma = 0 gives no eps)."""
        cx, ce = self.coefficients(alpha, sigma)
        det = alpha * ce - sigma * cx
        return (ce * x_t - sigma * pred) / det, (alpha * pred - cx * x_t) / det

    def from_x0(
        self, x0_hat: torch.Tensor, x_t: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor
    ) -> torch.Tensor:
        """The prediction of this target implied by an x0 prediction (eps_hat = (x_t - alpha * x0_hat) / sigma)."""
        cx, ce = self.coefficients(alpha, sigma)
        if isinstance(ce, float) and ce == 0.0:
            return cx * x0_hat
        return cx * x0_hat + ce * (x_t - alpha * x0_hat) / sigma

    def loss_factor(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """(c_x - c_eps * alpha / sigma)^2: squared error in this target per unit squared x0 error."""
        cx, ce = self.coefficients(alpha, sigma)
        return torch.as_tensor(cx - ce * alpha / sigma) ** 2

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}


TARGETS: tuple[str, ...] = tuple(_COEFS)


def get_target(name: str) -> Target:
    """A target by name: ``x0``, ``eps``, ``v``, ``score``, ``flow`` (aliases: epsilon, velocity, ...)."""
    key = _ALIASES.get(name, name)
    if key not in _COEFS:
        raise unknown_name("target", name, _COEFS)
    return Target(key)


def target_from_dict(d: dict[str, Any]) -> Target:
    if "name" not in d:
        raise DifflossError("a target config needs a 'name' key")
    return get_target(d["name"])
