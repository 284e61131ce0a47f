"""Backbones and the Denoiser wrapper: shapes, conditioning formulas, config round trip, bad configs."""

from __future__ import annotations

import math

import pytest
import torch

from diffloss.errors import DifflossError
from diffloss.models import Denoiser, default_backbone, sinusoidal_embedding
from diffloss.process import get_process

TINY_UNET = {"name": "unet", "preset": "tiny", "channels": 8}


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 10, 6)])
def test_unet_keeps_the_image_shape_including_sizes_that_need_padding(shape):
    d = Denoiser(TINY_UNET, shape, get_process("vp-cosine"))
    x = torch.randn(2, *shape)
    assert d(x, torch.tensor([0.1, 0.9])).shape == x.shape
    assert d.net.pad == ((-shape[1]) % 4, (-shape[2]) % 4)


def test_mlp_flattens_any_shape_and_defaults():
    d = Denoiser({"name": "mlp", "width": 16, "depth": 1}, (2, 3), get_process("flow"))
    assert d(torch.randn(5, 2, 3), torch.rand(5)).shape == (5, 2, 3)
    assert default_backbone((1, 28, 28))["name"] == "unet"
    assert default_backbone((2,))["name"] == default_backbone((1, 4, 4))["name"] == "mlp"


def test_conditioning_is_edm_c_in_and_c_noise():
    sd = 0.5
    d = Denoiser({"name": "mlp", "width": 8, "depth": 1}, (2,), get_process("edm"), sigma_data=sd)
    c_in, label, a_x, a_f = d.conditioning(torch.tensor([1.0, 0.002, 80.0], dtype=torch.float64))
    assert a_x.tolist() == [0, 0, 0] and a_f.tolist() == [1, 1, 1]  # no preconditioning: F is the prediction
    assert c_in.tolist() == pytest.approx(
        [1 / math.sqrt(1 + sd**2), 1 / math.sqrt(0.002**2 + sd**2), 1 / math.sqrt(80**2 + sd**2)]
    )
    assert label.tolist() == pytest.approx([0.0, 1000 * math.log(0.002) / 4, 1000 * math.log(80) / 4], rel=1e-6)
    vp = Denoiser({"name": "mlp", "width": 8, "depth": 1}, (2,), get_process("vp"), sigma_data=sd)
    t = 0.5  # VP-linear, continuous: log alpha_bar = -(0.1 t + 9.95 t^2)
    ab = math.exp(-(0.1 * t + 0.5 * 19.9 * t**2))
    c_in, label, _, _ = vp.conditioning(torch.tensor([t]))
    assert c_in.item() == pytest.approx(1 / math.sqrt(ab * sd**2 + 1 - ab), rel=1e-6)
    assert label.item() == pytest.approx(250 * 0.5 * math.log((1 - ab) / ab), rel=1e-6)


def test_sinusoidal_embedding_closed_form():
    e = sinusoidal_embedding(torch.tensor([0.0, 2.0]), 4, max_period=100.0)
    f = [1.0, 0.1]  # 100^(-k/2), k = 0, 1
    assert e[0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert e[1].tolist() == pytest.approx(
        [math.cos(2 * f[0]), math.cos(2 * f[1]), math.sin(2 * f[0]), math.sin(2 * f[1])]
    )


def test_config_round_trip_gives_the_same_function():
    torch.manual_seed(0)
    d = Denoiser(TINY_UNET, (1, 8, 8), get_process("vp-cosine", discrete=True), sigma_data=0.7)
    e = Denoiser.from_config(d.config())
    e.load_state_dict(d.state_dict())
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    assert e.config() == d.config() and torch.equal(d(x, t), e(x, t))


@pytest.mark.parametrize(
    "backbone, shape, needle",
    [
        ({"name": "resnet"}, (1, 8, 8), "unknown backbone 'resnet'"),
        ({"name": "unet"}, (64,), "needs image data"),
        ({"name": "unet", "preset": "huge"}, (1, 8, 8), "unknown UNet preset 'huge'"),
        ({"name": "unet", "channels": 12}, (1, 8, 8), "multiple of 8"),
    ],
)
def test_bad_backbone_configs(backbone, shape, needle):
    with pytest.raises(DifflossError, match=needle):
        Denoiser(backbone, shape, get_process("vp"))
