"""The control network: a sinusoidal time embedding and an MLP on (x, embedding), zero at initialisation.

With ``score_gate`` the network also gets a score s(x) (the target's, or for CMCD the annealed density's) as an input
and adds c(t) * clip(s(x)), with c(t) a per-output-coordinate MLP of time alone: the "gradient-gated" network of PIS
and of the DIS/CMCD reference implementations. It lets the control rescale the score per time step, a learned
time-dependent step size, which a plain MLP on x has to learn point by point.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from diffloss.models.embedding import sinusoidal_features

SCORE_CLIP = 100.0  # |s| per coordinate above which the gated score input is clipped (as in the references)


def time_embedding(t: torch.Tensor, features: int) -> torch.Tensor:
    """Sinusoidal features [sin, cos] of t in [0, 1]: (B,) -> (B, features), angular frequencies pi * 2^k for
    k = 0 ... features/2 - 1 (``diffloss.models.embedding.sinusoidal_features``), in the dtype of t."""
    freqs = math.pi * 2.0 ** torch.arange(features // 2, dtype=t.dtype, device=t.device)
    return sinusoidal_features(t, freqs, sin_first=True)


def _mlp(widths: list[int], out: int) -> nn.Sequential:
    """Linear + GELU through ``widths``, then a zero-initialised Linear to ``out`` (so the MLP starts at 0)."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.GELU()]
    last = nn.Linear(widths[-1], out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers, last)


class ControlNet(nn.Module):
    """u(x, t[, s]): R^dim x [0, 1] (x R^dim) -> R^out. ``hidden`` widths with GELU; starts at u = 0.

    ``out`` is a multiple of ``dim`` (DBS's two drifts share one network); with ``score_gate`` the score is repeated
    to match it, so each output coordinate gets its own gate c_j(t) on its own coordinate of s.
    """

    def __init__(
        self, dim: int, out: int, hidden: tuple[int, ...] = (64, 64), time_features: int = 32, score_gate: bool = False
    ):
        super().__init__()
        if score_gate and out % dim:
            raise ValueError(f"a score-gated ControlNet needs out to be a multiple of dim, got out={out}, dim={dim}")
        self.dim, self.time_features = dim, time_features
        self.mlp = _mlp([dim + time_features, *hidden], out)
        self.gate = _mlp([time_features, *hidden], out) if score_gate else None

    def forward(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, dim), t a 0-dim tensor (a tensor, not a float, so that torch.compile does not specialize on it);
        ``score`` (B, dim), given exactly when the network has a score gate."""
        emb = time_embedding(t.reshape(1), self.time_features)  # one row, shared by the batch
        u = self.mlp(torch.cat([x, emb.expand(x.shape[0], -1)], 1))
        if (self.gate is None) != (score is None):
            raise ValueError("pass a score (B, dim) exactly when the ControlNet has a score gate")
        if self.gate is None:
            return u
        if score.shape != x.shape:
            raise ValueError(f"the score must have the shape of x {tuple(x.shape)}, got {tuple(score.shape)}")
        s = score.clamp(-SCORE_CLIP, SCORE_CLIP).repeat(1, u.shape[1] // self.dim)
        return u + self.gate(emb) * s
