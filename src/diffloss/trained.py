"""A trained run as a sampler: the denoiser of a ``diffloss train`` checkpoint, its samples and image grids."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffloss.checkpoint import load_checkpoint
from diffloss.errors import DifflossError
from diffloss.models import Denoiser
from diffloss.sample import sample, step_levels, x0_predictor
from diffloss.target import Target, get_target
from diffloss.train import CHECKPOINT_FILE


@dataclass(frozen=True)
class Trained:
    """The network of a checkpoint (EMA or raw weights, in eval mode), its target and the checkpoint's meta."""

    model: Denoiser
    target: Target
    meta: dict[str, Any]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.model.shape


def load_trained(path: str | Path, *, ema: bool = True) -> Trained:
    """Load ``path`` (a run directory or its ``checkpoint.safetensors``); ``ema`` picks the EMA weights."""
    path = Path(path)
    tensors, meta = load_checkpoint(path / CHECKPOINT_FILE if path.is_dir() else path)
    if "model" not in meta or "config" not in meta:
        raise DifflossError(f"{path} is a diffloss checkpoint but not of `diffloss train` (no model config)")
    model = Denoiser.from_config(meta["model"])
    prefix = "ema/" if ema else "model/"
    try:
        model.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
    except RuntimeError as e:
        raise DifflossError(f"{path}: the weights do not fit the model config ({str(e).splitlines()[0]})") from None
    return Trained(model.eval().requires_grad_(False), get_target(meta["config"]["target"]), meta)


def sample_trained(
    trained: Trained,
    n: int,
    *,
    steps: int,
    sampler: str,
    seed: int,
    spacing: str = "karras",
    eta: float = 0.0,
    batch: int = 256,
    progress: bool = False,
    clip: float | None = None,
) -> torch.Tensor:
    """``n`` samples (n, *shape) float32 in the data's scaled units (``clip``: see ``x0_predictor``).

    All starting noise x = s_max * N(0, I) is drawn first from ``torch.Generator().manual_seed(seed)``, then
    integrated ``batch`` rows at a time; with a deterministic sampler (eta = 0) the result does not depend on
    ``batch`` beyond floating-point rounding. The same seed gives the same samples.
    """
    if n < 1 or batch < 1:
        raise DifflossError(f"--n and --batch must be >= 1, got {n} and {batch}")
    model = trained.model
    denoise = x0_predictor(model, model.process, trained.target, clip=clip)
    generator = torch.Generator().manual_seed(seed)
    sigmas = step_levels(model.process, steps, spacing)
    x = sigmas[0].item() * torch.randn((n, *trained.shape), generator=generator)
    with torch.no_grad():
        chunks = [
            sample(denoise, x[i : i + batch], sigmas, sampler=sampler, eta=eta, generator=generator, progress=progress)
            for i in range(0, n, batch)
        ]
    return torch.cat(chunks)


def image_grid(x: np.ndarray, cols: int | None = None, pad: int = 1, scale: int = 1) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] to one uint8 grid (H', W') for C = 1 or (H', W', 3) for C = 3.

    Values are clipped to [-1, 1] and mapped to 0..255; ``cols`` defaults to ceil(sqrt(N)); cells are separated
    by ``pad`` black pixels; ``scale`` enlarges the finished grid by pixel repetition (nearest neighbour)."""
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise DifflossError(f"an image grid needs 1 or 3 channels, got {c}")
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    img = np.round((np.clip(x, -1, 1) + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)
    grid = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = img[i]
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid[..., 0] if c == 1 else grid
