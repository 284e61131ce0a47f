"""Backbones (diffusers UNet2DModel presets, a time-embedded MLP) and the ``Denoiser`` wrapper around them."""

from diffloss.models.denoiser import BACKBONES, Denoiser, backbone_config, build_backbone, default_backbone
from diffloss.models.embedding import sinusoidal_embedding
from diffloss.models.mlp import MLP
from diffloss.models.unet import PRESETS, UNet

__all__ = [
    "BACKBONES",
    "MLP",
    "PRESETS",
    "backbone_config",
    "Denoiser",
    "UNet",
    "build_backbone",
    "default_backbone",
    "sinusoidal_embedding",
]
