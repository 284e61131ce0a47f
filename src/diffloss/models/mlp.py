"""A residual MLP for flat and toy data, conditioned on a noise label through a sinusoidal embedding and, when
class-conditional, on a class index through a learned embedding."""

from __future__ import annotations

import torch
from torch import nn

from diffloss.models.embedding import sinusoidal_embedding


class _Block(nn.Module):
    """h + Linear(SiLU(Linear(SiLU(LayerNorm(h)) + emb)))."""

    def __init__(self, width: int, emb_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.emb = nn.Linear(emb_dim, width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = self.fc1(nn.functional.silu(self.norm(h))) + self.emb(emb)
        return h + self.fc2(nn.functional.silu(z))


class MLP(nn.Module):
    """Maps (x of shape (B, dim), label of shape (B,)[, classes of shape (B,)]) to (B, dim).

    The label (a noise level; see ``Denoiser``) goes through ``sinusoidal_embedding`` and a two-layer MLP, and
    is added inside each of ``depth`` residual blocks of ``width`` units. With ``num_embeds`` > 0 (class
    conditioning) a learned embedding of the int64 ``classes`` (0 .. num_embeds - 1) is added to that time
    embedding, and ``classes`` must be given.
    """

    def __init__(self, dim: int, width: int = 256, depth: int = 3, emb_dim: int = 64, num_embeds: int = 0) -> None:
        super().__init__()
        self.emb_dim = emb_dim
        self.time = nn.Sequential(nn.Linear(emb_dim, 4 * emb_dim), nn.SiLU(), nn.Linear(4 * emb_dim, 4 * emb_dim))
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_Block(width, 4 * emb_dim) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))
        self.classes = nn.Embedding(num_embeds, 4 * emb_dim) if num_embeds else None

    def forward(self, x: torch.Tensor, label: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time(sinusoidal_embedding(label, self.emb_dim))
        if self.classes is not None:
            emb = emb + self.classes(classes)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
