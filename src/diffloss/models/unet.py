"""diffusers ``UNet2DModel`` backbones in a few size presets, for images of any size.

Every preset has three resolution levels (two downsamplings), so 8x8 digits and 28x28 MNIST need no padding
(28 -> 14 -> 7); sizes not divisible by 4 are zero-padded to the next multiple and the output cropped back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from diffloss.errors import DifflossError, unknown_name

# width multipliers per level, resnet layers per level, attention at the lowest level
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"channels": 32, "mult": (1, 2, 2), "layers_per_block": 1, "attention": False},
    "small": {"channels": 64, "mult": (1, 2, 2), "layers_per_block": 2, "attention": True},
    "base": {"channels": 128, "mult": (1, 2, 2), "layers_per_block": 2, "attention": True},
}
DOWNSAMPLE = 4  # 2 ** (levels - 1)


def unet_kwargs(preset: str, in_channels: int, channels: int | None = None) -> dict[str, Any]:
    """``UNet2DModel`` keyword arguments of a preset; ``channels`` overrides its base width (a multiple of 8)."""
    if preset not in PRESETS:
        raise unknown_name("UNet preset", preset, PRESETS)
    p = PRESETS[preset]
    c = channels or p["channels"]
    if c <= 0 or c % 8:
        raise DifflossError(f"--channels must be a multiple of 8 (GroupNorm uses 8 groups), got {c}")
    attn = p["attention"]
    return {
        "in_channels": in_channels,
        "out_channels": in_channels,
        "block_out_channels": tuple(c * m for m in p["mult"]),
        "layers_per_block": p["layers_per_block"],
        "down_block_types": ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D" if attn else "DownBlock2D"),
        "up_block_types": ("AttnUpBlock2D" if attn else "UpBlock2D", "UpBlock2D", "UpBlock2D"),
        "add_attention": attn,
        "norm_num_groups": 8,
        "attention_head_dim": 8,
    }


class UNet(nn.Module):
    """A ``UNet2DModel`` on (B, C, H, W) images, called as ``unet(x, label[, classes])`` with a (B,) float noise
    label and, when ``num_embeds`` > 0, (B,) int64 class indices in 0 .. num_embeds - 1.

    The label feeds diffusers' sinusoidal timestep embedding directly (it is not an integer timestep); the classes
    feed its learned class embedding (``num_class_embeds``), added to the timestep embedding.
    """

    def __init__(
        self, shape: tuple[int, int, int], preset: str = "tiny", channels: int | None = None, num_embeds: int = 0
    ) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        c, h, w = shape
        self.shape = shape
        self.pad = ((-h) % DOWNSAMPLE, (-w) % DOWNSAMPLE)
        self.net = UNet2DModel(
            sample_size=(h + self.pad[0], w + self.pad[1]),
            num_class_embeds=num_embeds or None,
            **unet_kwargs(preset, c, channels),
        )

    def forward(self, x: torch.Tensor, label: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        ph, pw = self.pad
        if ph or pw:
            x = nn.functional.pad(x, (0, pw, 0, ph))
        out = self.net(x, label, classes).sample
        return out[..., : self.shape[1], : self.shape[2]]
