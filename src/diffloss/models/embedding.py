"""Sinusoidal embedding of a scalar noise label (the transformer/DDPM positional embedding)."""

from __future__ import annotations

import math

import torch


def sinusoidal_embedding(label: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) labels -> (B, dim) features [cos(label * f_k), sin(label * f_k)], f_k = max_period^(-k / (dim/2)).

    ``dim`` must be even. Frequencies run from 1 down to 1/max_period, so labels spread over hundreds or
    thousands of units (like DDPM's 0..999 timesteps) give well-separated embeddings.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=label.device) / half)
    arg = label.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)
