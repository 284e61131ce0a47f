"""The control network ``ControlNet`` (``network="mlp"``): a sinusoidal time embedding and an MLP on (x, embedding),
zero at initialisation; and what every control network shares (``mlp``, ``gated_score``).

With ``score_gate`` the network also gets a score s(x) (the target's, or for CMCD the annealed density's) as an input
and adds c(t) * clip(s(x)), with c(t) a per-output-coordinate MLP of time alone: the "gradient-gated" network of PIS
and of the DIS/CMCD reference implementations. It lets the control rescale the score per time step, a learned
time-dependent step size, which a plain MLP on x has to learn point by point.

A control network has two calls: ``time_table(t)``, the (K+1, F) rows of everything it computes from the time alone
for the K+1 times of a simulation (computed once per ``diffloss.bridge.samplers.simulate`` call), and
``forward(x, row, score)`` with the (1, F) row of the current time, or for states of several times at once, x
(T, B, dim) with rows (T, 1, F). The reference-shaped network is
``diffloss.bridge.pisnet.PisNet`` (``network="pis"``).
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


def mlp(widths: list[int], out: int, activation: nn.Module | None = None) -> nn.Sequential:
    """Linear + activation (default GELU) through ``widths``, then a zero-initialised Linear to ``out`` (so the MLP
    starts at 0)."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), activation or nn.GELU()]
    return nn.Sequential(*layers, zero_linear(widths[-1], out))


def zero_linear(inp: int, out: int) -> nn.Linear:
    """A Linear layer with zero weight and bias: the last layer of a control network that starts at 0."""
    last = nn.Linear(inp, out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return last


def gated_score(x: torch.Tensor, score: torch.Tensor | None, gated: bool, out: int) -> torch.Tensor | None:
    """The gated input clip(s) of a network with ``out`` outputs, the score repeated along the last dimension so that
    each output coordinate gets its own coordinate of s; None for a network without a gate. Checks that a score of
    the shape of x (..., dim) is given exactly when the network has a gate."""
    if gated != (score is not None):
        raise ValueError("pass a score (B, dim) exactly when the control network has a score gate")
    if score is None:
        return None
    if score.shape != x.shape:
        raise ValueError(f"the score must have the shape of x {tuple(x.shape)}, got {tuple(score.shape)}")
    s = score.clamp(-SCORE_CLIP, SCORE_CLIP)
    return s if out == x.shape[-1] else s.repeat(*[1] * (x.dim() - 1), out // x.shape[-1])


def check_out(dim: int, out: int, score_gate: bool) -> None:
    """A score-gated network repeats the score to its ``out`` outputs, so ``out`` must be a multiple of ``dim``."""
    if score_gate and out % dim:
        raise ValueError(f"a score-gated control network needs out to be a multiple of dim, got out={out}, dim={dim}")


class ControlNet(nn.Module):
    """u(x, t[, s]): R^dim x [0, 1] (x R^dim) -> R^out. ``hidden`` widths with GELU; starts at u = 0.

    ``out`` is a multiple of ``dim`` (DBS's two drifts share one network); with ``score_gate`` the score is repeated
    to match it, so each output coordinate gets its own gate c_j(t) on its own coordinate of s.
    """

    def __init__(
        self, dim: int, out: int, hidden: tuple[int, ...] = (64, 64), time_features: int = 32, score_gate: bool = False
    ):
        super().__init__()
        check_out(dim, out, score_gate)
        self.dim, self.time_features = dim, time_features
        self.mlp = mlp([dim + time_features, *hidden], out)
        self.gate = mlp([time_features, *hidden], out) if score_gate else None

    def time_table(self, t: torch.Tensor) -> torch.Tensor:
        """The sinusoidal embeddings of the times t (T,), (T, time_features); no parameters."""
        return time_embedding(t, self.time_features)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, score: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., B, dim), ``emb`` the (..., 1, time_features) rows of ``time_table`` at the states' times; ``score``
        of the shape of x, given exactly when the network has a score gate."""
        u = self.mlp(torch.cat([x, emb.expand(*x.shape[:-1], -1)], -1))
        s = gated_score(x, score, self.gate is not None, u.shape[-1])
        return u if s is None else u + self.gate(emb) * s


class NetworkPair(nn.Module):
    """DBS's forward and backward drift networks as two separate networks behind the interface of one control network
    with 2 * dim outputs (``dbs_networks=2``, as the reference: dds_optim ``Networks/Pisgradnet.py`` builds a second
    ``create_diffusion_network(diff_direction="forward")`` for ``--Bridge_Type DBS``).

    ``time_table`` is the two networks' tables side by side, (T, F_forward + F_backward); ``forward`` splits the row,
    runs each network on the same x and score and returns [u, v], (B, 2 * dim), u from ``forward_net`` and v from
    ``backward_net``: what ``diffloss.bridge.samplers`` reads as DBS's forward and backward controls."""

    def __init__(self, forward_net: nn.Module, backward_net: nn.Module):
        super().__init__()
        self.forward_net, self.backward_net = forward_net, backward_net
        with torch.no_grad():
            self.split = forward_net.time_table(torch.zeros(1)).shape[1]

    def time_table(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.forward_net.time_table(t), self.backward_net.time_table(t)], 1)

    def forward(self, x: torch.Tensor, row: torch.Tensor, score: torch.Tensor | None = None) -> torch.Tensor:
        u = self.forward_net(x, row[..., : self.split], score)
        return torch.cat([u, self.backward_net(x, row[..., self.split :], score)], -1)
