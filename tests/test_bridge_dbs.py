"""DBS as the reference runs it: two separate drift networks (``dbs_networks=2``, ``NetworkPair``) and the annealed
score in the gate (``annealed_gate``): shapes, parameter counts, independence of the two networks, the score each
step's network sees, bad configurations, and a run that trains, saves and reloads."""

from __future__ import annotations

import pytest
import torch

from diffloss.bridge import make_config
from diffloss.bridge.networks import ControlNet, NetworkPair
from diffloss.bridge.pisnet import PisNet
from diffloss.bridge.samplers import BridgeSampler, SamplerConfig, simulate
from diffloss.bridge.targets.synthetic import Gaussian
from diffloss.bridge.train import evaluate_checkpoint, train_bridge
from diffloss.errors import DifflossError


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("network", ["pis", "mlp"])
def test_two_networks_have_the_shapes_and_parameters_of_two_single_networks(network):
    d, K = 50, 8
    model = BridgeSampler(SamplerConfig("dbs", d, K, network=network, score_gate=True, dbs_networks=2))
    assert isinstance(model.net, NetworkPair)
    single = PisNet(d, d, 64, 2, K, True) if network == "pis" else ControlNet(d, d, (64, 64), 32, True)
    assert _count(model.net) == 2 * _count(single)
    if network == "pis":
        assert _count(model.net) == 94_152  # the reference's two PISgradnets for GMM40 (2 x 47,076)
    one = BridgeSampler(SamplerConfig("dbs", d, K, network=network, score_gate=True))
    table, one_table = model.net.time_table(model.time_grid()), one.net.time_table(one.time_grid())
    assert table.shape[0] == K + 1 and table.shape[1] == 2 * single.time_table(model.time_grid()).shape[1]
    assert one_table.shape[0] == K + 1
    x, score = torch.randn(5, d), torch.randn(5, d)
    for net in (model.net.forward_net, model.net.backward_net):  # leave the zero start, so u and v differ
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.1)
    table = model.net.time_table(model.time_grid())
    out = model.net(x, table[3:4], score)
    assert out.shape == (5, 2 * d)
    split = model.net.split
    torch.testing.assert_close(out[:, :d], model.net.forward_net(x, table[3:4, :split], score))
    torch.testing.assert_close(out[:, d:], model.net.backward_net(x, table[3:4, split:], score))


def test_the_backward_drift_does_not_depend_on_the_forward_network():
    model = BridgeSampler(SamplerConfig("dbs", 3, 4, hidden=(8,), score_gate=True, dbs_networks=2))
    for p in model.net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(6, 3)
    row = model.net.time_table(model.time_grid())[2:3]
    _, bwd = model.drifts(x, row, score=torch.randn(6, 3))
    bwd.sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in model.net.forward_net.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.net.backward_net.parameters())


@pytest.mark.parametrize("annealed", [True, False])
def test_the_gate_sees_the_annealed_score_on_the_linear_schedule(annealed):
    """At step k the network's score input is grad log p_0 + (k/K) (grad log p~ - grad log p_0) with the annealed
    gate, grad log p~ without; p_0 = N(mu, s^2) and p~ a Gaussian, both in closed form here."""
    target = Gaussian(dim=2, mean=1.5, std=0.7)
    K = 4
    cfg = SamplerConfig("dbs", 2, K, hidden=(8,), init_std=2.0, score_gate=True, dbs_networks=2, annealed_gate=annealed)
    model = BridgeSampler(cfg).double()
    with torch.no_grad():
        model.prior_mean.fill_(-0.3)
    seen = []
    forward = model.net.forward

    def spy(x, row, score=None):
        seen.append((x.detach().clone(), score.detach().clone()))
        return forward(x, row, score)

    model.net.forward = spy
    with torch.no_grad():
        simulate(model, target, 7, torch.Generator().manual_seed(0), detach_path=True)
    assert len(seen) == K + 1
    for k, (x, score) in enumerate(seen):
        target_score = -(x - 1.5) / 0.7**2
        prior_score = -(x + 0.3) / 2.0**2
        expected = prior_score + k / K * (target_score - prior_score) if annealed else target_score
        torch.testing.assert_close(score, expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sampler": "cmcd", "dbs_networks": 2}, "2 only for --sampler dbs"),
        ({"sampler": "dbs", "dbs_networks": 3}, "must be 1 or 2"),
        ({"sampler": "dbs", "annealed_gate": True}, "needs --score-gate"),
        ({"sampler": "cmcd", "annealed_gate": True, "score_gate": True}, "cmcd always anneals"),
    ],
)
def test_bad_configurations_are_one_line_errors(kwargs, message):
    with pytest.raises(DifflossError, match=message):
        SamplerConfig(dim=2, **kwargs)


def test_a_two_network_run_trains_saves_and_reloads(tmp_path):
    cfg = make_config(
        "gaussian", "dbs", steps=4, hidden=(8,), loss="lv", iters=3, batch=16, eval_every=0, eval_n=64,
        score_gate=True, dbs_networks=2, annealed_gate=True, separate_chains=True,
    )  # fmt: skip
    result = train_bridge(cfg, tmp_path, quiet=True)
    assert result["iterations"] == 3 and result["diverged_at"] is None
    again = evaluate_checkpoint(tmp_path, 64, 1)
    assert again["config"]["sampler"]["dbs_networks"] == 2 and again["iteration"] == 3
