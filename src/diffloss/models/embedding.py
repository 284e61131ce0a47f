"""Sinusoidal embeddings of a scalar: the noise label of the denoisers and the time of the bridge samplers."""

from __future__ import annotations

import math

import torch


def sinusoidal_features(t: torch.Tensor, freqs: torch.Tensor, *, sin_first: bool = False) -> torch.Tensor:
    """(B,) scalars and (F,) angular frequencies -> (B, 2F) features [cos(t * f_k), sin(t * f_k)] ([sin, cos] with
    ``sin_first``), in the dtype of ``t * freqs``."""
    arg = t[:, None] * freqs[None]
    parts = (torch.sin(arg), torch.cos(arg)) if sin_first else (torch.cos(arg), torch.sin(arg))
    return torch.cat(parts, dim=1)


def sinusoidal_embedding(label: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) labels -> (B, dim) features [cos(label * f_k), sin(label * f_k)], f_k = max_period^(-k / (dim/2)).

    ``dim`` must be even. Frequencies run from 1 down to 1/max_period, so labels spread over hundreds or
    thousands of units (like DDPM's 0..999 timesteps) give well-separated embeddings. Computed in float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=label.device) / half)
    return sinusoidal_features(label.float(), freqs)
