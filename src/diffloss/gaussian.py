"""The Gaussian log density, defined once (the bridge's path kernels and priors, and its Gaussian targets use it)."""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_pdf(
    x: torch.Tensor, mean: torch.Tensor | float, log_var: torch.Tensor | float, *, sum_last: bool = False
) -> torch.Tensor:
    """Elementwise log N(x; mean, exp(log_var)) = -((x - mean)^2 / var + log var + log 2 pi) / 2, in nats; with
    ``sum_last`` summed over the last dimension, the log density of a diagonal Gaussian on R^d, (..., d) -> (...).

    Broadcasts like ``x - mean``; computed in the dtype of ``x``. The variance is given by its log (a log-std s is
    ``log_var = 2 s``). ``sum_last`` sums before halving, as the bridge sampler's path densities always have: the
    forward values are the same either way, but autograd accumulates gradients in graph order, so the other order
    would change its training runs in the last bits.
    """
    log_var = torch.as_tensor(log_var, dtype=x.dtype, device=x.device)
    terms = (x - mean) ** 2 * torch.exp(-log_var) + log_var + LOG_2PI
    return -0.5 * (terms.sum(-1) if sum_last else terms)
