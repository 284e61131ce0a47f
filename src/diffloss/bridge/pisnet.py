"""``PisNet`` (``network="pis"``): the control network of the reference, PIS's gradient-gated network.

Read from sebaleh87/dds_optim ``Networks/Pisgradnet.py`` (``PisgradnetBaseClass``, selected by ``--base_net
PISgradnet`` in every command of ``Configs/Sweeps/BestRunsSweeps/*.md``, with ``--n_hidden 64`` and ``num_layers``
at its default 2), the same network as DenisBless/variational_sampling_methods
``algorithms/common/models/pisgrad_net.py`` (``PISGRADNet``). With width w (``n_hidden``), L layers (``num_layers``),
dimension d and GELU the tanh approximation (flax's ``nn.gelu``):

    Fourier features  phi(tau) = [sin(c tau + p), cos(c tau + p)] (2w), c = linspace(0.1, 100, w) fixed,
                      p (w) learned, zero at init; tau the reference's time in steps, K at the prior, 0 at the target
                      (its ``t * n_integration_steps``, t counted down from 1): tau = K (1 - t) in our time t
    time embedding    Linear(2w, w), GELU, Linear(w, w)                                   -> e(tau)
    state network     Linear(d + w, w), GELU, [Linear(w, w), GELU] x (L - 1), Linear(w, d) on (x, e(tau))  -> n(x, tau)
    gate              Linear(2w, w), [GELU, Linear(w, w)] x L, Linear(w, d)  (no activation before the last)
                      on phi(tau)                                                          -> c(tau)
    control           u = clip(n, +-1e4) + c(tau) * clip(s, +-1e2)

The gate and its score input are there with ``score_gate`` (the reference's ``langevin_precon``, on by default).
Parameters: w (phase) + (2w w + w + w w + w) (time embedding) + ((d + w) w + w + (L - 1)(w w + w) + w d + d)
(state) + (2w w + w + L (w w + w) + w d + d) (gate); for w = 64, L = 2: 37,376 + 194 d, so 47,076 for GMM40
(d = 50, the reference's count) and 42,420 for Seeds (d = 26). CMCD's + grad/2 of the reference is our Langevin term
(``diffloss.bridge.samplers``), not part of the network.

Differences from the reference: the last layers of the state network and of the gate start at zero (the reference:
weights 1e-8), so u = 0 at initialisation like ``ControlNet``; the score input is differentiated (the reference stops
its gradient), so rKL-R's gradient stays exact; DBS's two drifts are one network with 2d outputs (the reference: two
networks). The other layers are initialised as flax's default Dense: LeCun-normal weights (truncated at two
standard deviations), zero biases. Everything that depends on time alone is computed once per simulation for its
K+1 times (``time_table``): c(tau), and e(tau) already through the state network's first layer, whose input
[x, e] splits as W [x, e] + b = W_x x + (W_e e + b), so a call adds the time's row to W_x x instead of
concatenating e to every state (same values up to rounding).
"""

from __future__ import annotations

from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn

from diffloss.bridge.networks import check_out, gated_score, mlp, zero_linear

OUTER_CLIP = 1e4  # |n| per coordinate above which the state network's output is clipped (the reference's outer_clip)
FREQ_RANGE = (0.1, 100.0)  # the reference's fixed Fourier coefficients, linspace(0.1, 100, width)
TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a unit normal truncated to (-2, 2) (flax's variance_scaling)


def _gelu() -> nn.Module:
    return nn.GELU(approximate="tanh")


def _lecun_normal_(layer: nn.Linear) -> None:
    """flax's default Dense initialisation: truncated-normal weights of variance 1 / fan_in, zero bias."""
    std = layer.in_features**-0.5 / TRUNCATED_NORMAL_STD
    nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
    nn.init.zeros_(layer.bias)


class PisNet(nn.Module):
    """u(x, t[, s]) of the reference's shape (module docstring): R^dim x [0, 1] (x R^dim) -> R^out, u = 0 at init.

    ``out`` is a multiple of ``dim`` (DBS's two drifts); ``width`` and ``layers`` are the reference's ``n_hidden`` and
    ``num_layers``; ``steps`` = K gives the Fourier features the reference's time unit."""

    def __init__(self, dim: int, out: int, width: int = 64, layers: int = 2, steps: int = 128, score_gate: bool = True):
        super().__init__()
        check_out(dim, out, score_gate)
        self.dim, self.width, self.steps = dim, width, steps
        self.register_buffer("freqs", torch.linspace(*FREQ_RANGE, width), persistent=False)
        self.phase = nn.Parameter(torch.zeros(width))
        self.time_net = nn.Sequential(nn.Linear(2 * width, width), _gelu(), nn.Linear(width, width))
        self.mlp = mlp([dim + width] + [width] * layers, out, _gelu())
        hidden = [nn.Linear(2 * width, width)] + [m for _ in range(layers) for m in (_gelu(), nn.Linear(width, width))]
        self.gate = nn.Sequential(*hidden, zero_linear(width, out)) if score_gate else None
        for layer in self.modules():
            if isinstance(layer, nn.Linear) and layer.weight.count_nonzero():  # the zero last layers stay zero
                _lecun_normal_(layer)

    def time_table(self, t: torch.Tensor) -> torch.Tensor:
        """[W_e e(tau) + b, c(tau)] at the times t (T,) in [0, 1], (T, width + out) (without a gate (T, width)): the
        time's contribution to the state network's first layer (module docstring) and the gate."""
        arg = (self.steps * (1 - t))[:, None] * self.freqs + self.phase
        phi = torch.cat([torch.sin(arg), torch.cos(arg)], 1)
        first = self.mlp[0]
        parts = [F.linear(self.time_net(phi), first.weight[:, self.dim :], first.bias)]
        return torch.cat(parts + ([self.gate(phi)] if self.gate is not None else []), 1)

    def forward(self, x: torch.Tensor, row: torch.Tensor, score: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., B, dim), ``row`` the (..., 1, F) rows of ``time_table`` at the states' times; ``score`` of the
        shape of x, given exactly when the network has a score gate."""
        time_part, c = row[..., : self.width], row[..., self.width :]
        h = F.linear(x, self.mlp[0].weight[:, : self.dim]) + time_part
        for layer in islice(self.mlp, 1, None):
            h = layer(h)
        u = h.clamp(-OUTER_CLIP, OUTER_CLIP)
        s = gated_score(x, score, self.gate is not None, u.shape[-1])
        return u if s is None else u + c * s
