"""The optimizer chains (``diffloss.bridge.chains``): which parameters each chain holds, each chain clipped at norm 1
on its own and stepped at its own lr (checked against RAdam's first step by hand), each chain's cosine to lr/10,
bit-exact resume, and checkpoints of the one-optimizer layout still loading."""

from __future__ import annotations

import math

import pytest
import torch

from diffloss.bridge import make_config
from diffloss.bridge.chains import INTERPOLATION_PARAMETERS, SDE_PARAMETERS
from diffloss.bridge.losses import DETACHED, loss_terms
from diffloss.bridge.run import BridgeRun
from diffloss.bridge.samplers import simulate
from diffloss.bridge.train import CHECKPOINT, train_bridge
from diffloss.checkpoint import load_checkpoint, save_checkpoint
from diffloss.errors import DifflossError

LR, INTERPOL_LR, FLOOR = 0.02, 0.003, 0.1


def _config(sampler="cmcd", loss="rkl-ld", separate=True, iters=10, **kw):
    return make_config(
        "gaussian", sampler, steps=4, hidden=(8,), loss=loss, batch=32, iters=iters, lr=LR, lr_floor=FLOOR,
        separate_chains=separate, interpol_lr=INTERPOL_LR if separate else None, eval_every=0, eval_n=64,
        init_sigma=3.0, **kw,
    )  # fmt: skip


def test_chains_hold_the_network_the_sde_parameters_and_the_schedule():
    run = BridgeRun(_config())
    named = {id(p): n for n, p in run.model.named_parameters()}
    names = {c.name: {named[id(p)] for p in c.params} for c in run.chains}
    assert set(names) == {"network", "sde", "interpolation"}
    assert names["sde"] == set(SDE_PARAMETERS) and names["interpolation"] == set(INTERPOLATION_PARAMETERS)
    assert names["network"] == {n for n in named.values() if n.startswith("net.")}
    assert [c.name for c in BridgeRun(_config("dbs")).chains] == ["network", "sde"]  # no schedule to learn
    frozen = BridgeRun(_config(learn_sigma=False, learn_prior=False))
    assert [c.name for c in frozen.chains] == ["network", "interpolation"]
    one = BridgeRun(_config(separate=False))
    assert [c.name for c in one.chains] == ["all"] and len(one.chains[0].params) == len(list(one.model.parameters()))
    tb = BridgeRun(_config(loss="tb"))
    assert any(p is tb.log_z for p in tb.chains[0].params)
    with pytest.raises(DifflossError, match="needs --separate-chains"):
        make_config("gaussian", "cmcd", steps=4, interpol_lr=0.1)


@pytest.mark.parametrize("separate", [True, False])
def test_first_step_is_lr_times_the_gradient_clipped_per_chain(separate):
    """RAdam's first step moves p by -lr * m_hat = -lr * g (its variance rectification is off while rho_t <= 5), so
    with each chain's gradient clipped at norm 1 on its own the step is -lr_c * g * min(1, 1 / |g_c|), |g_c| the
    norm over chain c only. The gradient comes from a second run of the same seed, differentiated here by hand."""
    cfg = _config(separate=separate)
    run, twin = BridgeRun(cfg), BridgeRun(cfg)
    traj = simulate(twin.model, twin.target, cfg.batch, twin.generator, detach_path=DETACHED[cfg.loss])
    loss_terms(cfg.loss, traj).mean().backward()
    grads = {n: p.grad.detach().clone() for n, p in twin.model.named_parameters()}
    before = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    run.step()
    chain_of = {}
    for name, _ in run.model.named_parameters():
        if separate:
            chain_of[name] = (
                "sde" if name in SDE_PARAMETERS else "interpolation" if name in INTERPOLATION_PARAMETERS else "network"
            )
        else:
            chain_of[name] = "all"
    norms = {
        c: math.sqrt(sum(float(grads[n].pow(2).sum()) for n in chain_of if chain_of[n] == c))
        for c in set(chain_of.values())
    }
    assert max(norms.values()) > 1  # some chain is clipped
    for name, p in run.model.named_parameters():
        c = chain_of[name]
        lr = INTERPOL_LR if c == "interpolation" else LR
        expected = before[name] - lr * grads[name] * min(1.0, 1.0 / (norms[c] + 1e-6))
        torch.testing.assert_close(p.detach(), expected, rtol=1e-4, atol=1e-7)


def test_each_chain_decays_by_a_cosine_to_a_tenth_of_its_lr():
    run = BridgeRun(_config())
    for n in range(1, 11):
        run.step()
        f = FLOOR + (1 - FLOOR) * (1 + math.cos(math.pi * n / 10)) / 2
        lrs = run.learning_rates()
        assert lrs["network"] == pytest.approx(LR * f) and lrs["sde"] == pytest.approx(LR * f)
        assert lrs["interpolation"] == pytest.approx(INTERPOL_LR * f)
    assert lrs["interpolation"] == pytest.approx(INTERPOL_LR / 10)


def test_resume_with_separate_chains_is_bit_exact(tmp_path):
    cfg = _config(iters=6)
    straight = train_bridge(cfg, tmp_path / "a", quiet=True)
    run = BridgeRun(cfg)
    for _ in range(3):
        run.step()
    run.save(tmp_path / "b" / CHECKPOINT)
    assert train_bridge(cfg, tmp_path / "b", resume=True, quiet=True) == straight


def test_a_checkpoint_of_one_optimizer_loads_as_the_chain_all(tmp_path):
    """The layout before the chains: tensors optim.<param>.<name>, metadata param_groups and scheduler."""
    run = BridgeRun(_config(separate=False))
    for _ in range(2):
        run.step()
    run.save(tmp_path / "new.safetensors")
    tensors, meta = load_checkpoint(tmp_path / "new.safetensors")
    old = {k.replace("optim.all.", "optim."): v for k, v in tensors.items()}
    chain = meta.pop("chains")["all"]
    save_checkpoint(tmp_path / "old.safetensors", old, {**meta, **chain})
    loaded = BridgeRun.load(tmp_path / "old.safetensors")
    assert loaded.tensors().keys() == run.tensors().keys()
    assert all(torch.equal(v, run.tensors()[k]) for k, v in loaded.tensors().items())
    assert loaded.learning_rates() == run.learning_rates()
    a, b = loaded.step(), run.step()
    assert a == b
