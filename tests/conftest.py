"""Shared test helpers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``cuda`` skip on a machine without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_thread():
    """Commands invoked in-process set torch's thread count (``--threads 0`` = every core); it is put back to one
    after every test (before the next one's fixtures), so results and timings do not depend on the order of tests."""
    yield
    torch.set_num_threads(1)


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run ``python -m diffloss ARGS`` in a subprocess (as a user would), capturing output."""
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "diffloss", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


@pytest.fixture
def cli():
    return run_cli


def write_tiny_diffusers(root, prediction_type="v_prediction", **scheduler):
    """A diffusers ``save_pretrained`` directory under ``root``: a random 8x8 one-channel ``UNet2DModel`` (seed 0)
    in unet/ and a ``DDPMScheduler(prediction_type, **scheduler)`` in scheduler/; returns the UNet."""
    from diffusers import DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8,
    )  # fmt: skip
    unet.save_pretrained(root / "unet")
    DDPMScheduler(prediction_type=prediction_type, **scheduler).save_pretrained(root / "scheduler")
    return unet


@pytest.fixture
def tiny_diffusers():
    return write_tiny_diffusers


def small_train_config(**kw):
    """A ``TrainConfig`` of seconds: moons, flow process and target, a 32-wide one-layer MLP, 6 steps of 16,
    checkpoints every 3 and metrics every 2 steps, constant weighting and logit-normal levels; ``kw`` overrides."""
    from diffloss.process import get_process
    from diffloss.train import TrainConfig

    base = dict(
        data="moons",
        process=get_process("flow").to_dict(),
        target="flow",
        weighting={"name": "constant", "on": "flow"},
        density={"name": "logit-normal"},
        backbone={"name": "mlp", "width": 32, "depth": 1},
        steps=6,
        batch=16,
        ckpt_every=3,
        log_every=2,
    )
    return TrainConfig(**{**base, **kw})
