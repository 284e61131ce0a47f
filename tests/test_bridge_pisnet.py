"""``network="pis"`` (``diffloss.bridge.pisnet.PisNet``): the reference's parameter count, zero control at
initialisation, training, configs; and the time table computed once per simulation, bit-identical for ``ControlNet``."""

from __future__ import annotations

import pytest
import torch

from diffloss.bridge import BridgeRun, make_config
from diffloss.bridge.config import BridgeConfig
from diffloss.bridge.networks import ControlNet, time_embedding
from diffloss.bridge.pisnet import PisNet
from diffloss.bridge.samplers import BridgeSampler, SamplerConfig, simulate
from diffloss.errors import DifflossError


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("dim", [50, 26, 2])
def test_parameter_count_is_the_reference_formula(dim):
    """37,376 + 194 d for n_hidden 64, num_layers 2 (pisnet docstring): 47,076 for GMM40, as the reference states."""
    assert _count(PisNet(dim, dim)) == 37_376 + 194 * dim
    if dim == 50:
        assert _count(PisNet(dim, dim)) == 47_076
    model = BridgeSampler(SamplerConfig("cmcd", dim, 8, network="pis", score_gate=True))
    assert _count(model.net) == 37_376 + 194 * dim


@pytest.mark.parametrize("gate", [False, True])
@pytest.mark.parametrize("out_factor", [1, 2])
def test_control_is_zero_at_initialisation(gate, out_factor):
    torch.manual_seed(0)
    dim, k = 3, 8
    net = PisNet(dim, out_factor * dim, width=16, steps=k, score_gate=gate)
    table = net.time_table(torch.arange(k + 1) / k)
    assert table.shape == (k + 1, 16 + (out_factor * dim if gate else 0))
    x = 10 * torch.randn(5, dim)
    u = net(x, table[3:4], torch.randn(5, dim) if gate else None)
    assert u.shape == (5, out_factor * dim) and torch.equal(u, torch.zeros_like(u))
    hidden = net.time_net[0]  # flax's default init: LeCun normal, zero bias
    assert float(hidden.weight.detach().std()) == pytest.approx(32**-0.5, rel=0.2) and not hidden.bias.any()
    with pytest.raises(ValueError, match="score"):
        net(x, table[3:4], None if gate else x)


def test_time_table_rows_equal_the_network_at_one_time():
    torch.manual_seed(0)
    net = PisNet(4, 4, width=8, steps=16)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    t = torch.arange(17) / 16
    table = net.time_table(t)
    rows = torch.cat([net.time_table(t[k : k + 1]) for k in range(17)])
    assert torch.allclose(table, rows, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("steps", [8, 100, 128])
def test_hoisted_time_table_is_bit_identical_for_the_mlp(steps, dtype):
    """ControlNet's table rows equal, bit for bit, the embedding it computed per step before the hoisting (from the
    0-dim t = k / K), so its runs are unchanged."""
    model = BridgeSampler(SamplerConfig("dis", 2, steps)).to(dtype)
    table = model.net.time_table(model.time_grid())
    for k in range(steps + 1):
        per_step = time_embedding(torch.tensor(k / steps, dtype=dtype).reshape(1), model.net.time_features)
        assert torch.equal(table[k : k + 1], per_step)
    assert isinstance(model.net, ControlNet)


def test_cmcd_with_pis_trains_on_funnel(tmp_path):
    """40 rKL-LD steps at batch 64 lower the rKL loss E[R] (= -ELBO, on fixed draws); the checkpoint reloads it."""
    torch.set_num_threads(1)
    cfg = make_config(
        "funnel", "cmcd", steps=8, batch=64, iters=40, lr=5e-3, loss="rkl-ld", network="pis", score_gate=True
    )
    run = BridgeRun(cfg)

    def elbo() -> float:
        with torch.no_grad():
            return float(-simulate(run.model, run.target, 1000, torch.Generator().manual_seed(7)).log_rn.mean())

    before = elbo()
    for _ in range(cfg.iters):
        assert run.step()[1]
    after = elbo()
    assert after > before + 0.1, (before, after)
    run.save(tmp_path / "ckpt.safetensors")
    again = BridgeRun.load(tmp_path / "ckpt.safetensors")
    assert again.cfg.sampler.network == "pis" and elbo() == after
    for a, b in zip(run.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_config_round_trip_and_old_configs_load_as_mlp():
    cfg = make_config("funnel", "cmcd", steps=8, network="pis", score_gate=True)
    assert BridgeConfig.from_dict(cfg.to_dict()) == cfg and cfg.sampler.network == "pis"
    old = make_config("funnel", "cmcd", steps=8).to_dict()
    del old["sampler"]["network"]
    assert BridgeConfig.from_dict(old).sampler.network == "mlp"
    with pytest.raises(DifflossError, match="network"):
        SamplerConfig("cmcd", 2, network="unet")
    with pytest.raises(DifflossError, match="equal --hidden"):
        SamplerConfig("cmcd", 2, network="pis", hidden=(64, 32))
