"""``diffloss.loader``: a ``diffloss train`` run and a diffusers directory load into one ``DiffusionModel`` whose
network predicts exactly what the original network does, and both sample through ``sample_model``."""

from __future__ import annotations

import pytest
import torch

from diffloss.checkpoint import load_checkpoint
from diffloss.loader import DiffusionModel, load_diffusers, load_trained
from diffloss.process import get_process
from diffloss.sample import sample_model, x0_predictor
from diffloss.train import CHECKPOINT_FILE, TrainConfig, train


@pytest.fixture(scope="module")
def moons_run(tmp_path_factory):
    """A 6-step flow-matching MLP on moons: the in-memory ``Run`` and its directory."""
    cfg = TrainConfig(
        data="moons", process=get_process("flow").to_dict(), target="flow", weighting={"name": "constant"},
        density={"name": "uniform-t"}, backbone={"name": "mlp", "width": 16, "depth": 1}, steps=6, batch=16,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("run") / "run"
    return train(cfg, out), out


def test_our_checkpoint_predicts_as_the_trained_networks(moons_run):
    run, out = moons_run
    x_t = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    t = torch.rand(32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for path, ema, net in [(out, True, run.ema), (out / CHECKPOINT_FILE, True, run.ema), (out, False, run.model)]:
        model = load_trained(path, ema=ema)
        assert type(model) is DiffusionModel and model.cond == "t" and model.shape == (2,)
        assert model.target.name == "flow" and model.process.to_dict() == run.cfg.process
        assert not model.network.training and not any(p.requires_grad for p in model.network.parameters())
        with torch.no_grad():
            assert torch.equal(model.network(x_t, t), net(x_t, t))
    tensors, _ = load_checkpoint(out / CHECKPOINT_FILE)
    for key, value in load_trained(out).network.state_dict().items():
        assert torch.equal(value, tensors[f"ema/{key}"]), key


def test_a_diffusers_directory_predicts_as_its_unet(tmp_path, tiny_diffusers):
    unet = tiny_diffusers(tmp_path / "pipe", beta_schedule="squaredcos_cap_v2").eval()
    model = load_diffusers(tmp_path / "pipe")
    assert type(model) is DiffusionModel and model.cond == "timestep" and model.shape == (1, 8, 8)
    assert model.target.name == "v" and model.process.name == "vp-cosine" and model.process.discrete
    x_t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    n = torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        assert torch.equal(model.network(x_t, n), unet(x_t, n).sample)
        # the x0 estimate on the s-axis at a training step, against diffusers' own v -> x0 rule
        from diffusers import DDPMScheduler

        ab = DDPMScheduler.from_pretrained(tmp_path / "pipe" / "scheduler").alphas_cumprod[500].double()
        s = torch.full((4,), ((1 - ab) / ab).sqrt().item())
        x0 = x0_predictor(model.network, model.process, model.target, model.cond)(x_t / ab.sqrt().float(), s)
        v = unet(x_t, torch.full((4,), 500)).sample
        torch.testing.assert_close(x0, (ab.sqrt() * x_t - (1 - ab).sqrt() * v).float(), rtol=1e-3, atol=1e-4)


def test_both_sample_through_one_function(moons_run, tmp_path, tiny_diffusers):
    tiny_diffusers(tmp_path / "pipe")
    for model in (load_trained(moons_run[1]), load_diffusers(tmp_path / "pipe")):
        a = sample_model(model, 6, steps=3, sampler="euler", seed=0)
        assert a.shape == (6, *model.shape) and a.dtype == torch.float32 and torch.isfinite(a).all()
        assert torch.equal(a, sample_model(model, 6, steps=3, sampler="euler", seed=0))
        torch.testing.assert_close(sample_model(model, 6, steps=3, sampler="euler", seed=0, batch=4), a)
