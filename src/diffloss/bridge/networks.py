"""The control network: a sinusoidal time embedding and an MLP on (x, embedding), zero at initialisation."""

from __future__ import annotations

import math

import torch
from torch import nn


def time_embedding(t: torch.Tensor, features: int) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1]: (B,) -> (B, features), frequencies 1 ... 2^(features/2 - 1) times pi."""
    freqs = math.pi * 2.0 ** torch.arange(features // 2, dtype=t.dtype, device=t.device)
    angles = t[:, None] * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], 1)


class ControlNet(nn.Module):
    """u(x, t): R^dim x [0, 1] -> R^out. ``hidden`` widths with GELU; the last layer starts at zero, so u = 0."""

    def __init__(self, dim: int, out: int, hidden: tuple[int, ...] = (64, 64), time_features: int = 32):
        super().__init__()
        self.time_features = time_features
        widths = [dim + time_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.GELU()]
        last = nn.Linear(widths[-1], out)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(*layers, last)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, dim), t a 0-dim tensor (a tensor, not a float, so that torch.compile does not specialize on it)."""
        emb = time_embedding(t.reshape(1), self.time_features).expand(x.shape[0], -1)  # one row, shared by the batch
        return self.mlp(torch.cat([x, emb], 1))
