"""Maths of the bridge samplers and losses, checked against closed forms and independent estimators."""

from __future__ import annotations

import math

import pytest
import torch

from diffloss.bridge import BridgeRun, make_config
from diffloss.bridge import metrics as M
from diffloss.bridge.losses import BRIDGE_LOSSES, DETACHED, loss_terms
from diffloss.bridge.networks import time_embedding
from diffloss.bridge.samplers import BRIDGE_SAMPLERS, CONTROL_NETWORKS, BridgeSampler, SamplerConfig, simulate
from diffloss.bridge.targets.synthetic import Gaussian
from diffloss.gaussian import gaussian_log_pdf


def _model(
    sampler: str, dim: int, steps: int, init_std: float = 1.0, gate: bool = False, network: str = "mlp"
) -> BridgeSampler:
    torch.manual_seed(0)
    cfg = SamplerConfig(sampler, dim, steps, hidden=(16,), init_std=init_std, score_gate=gate, network=network)
    return BridgeSampler(cfg).double()


def _randomize_control(model: BridgeSampler, scale: float = 0.3) -> None:
    """Give the zero-initialised last layers (and the CMCD schedule) non-trivial values."""
    g = torch.Generator().manual_seed(1)
    last = [model.net.mlp[-1]] + ([model.net.gate[-1]] if model.net.gate is not None else [])
    with torch.no_grad():
        for p in (p for layer in last for p in layer.parameters()):
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        if hasattr(model, "beta_logits"):
            model.beta_logits.copy_(torch.randn(model.beta_logits.shape, generator=g, dtype=torch.float64))
        model.prior_mean.fill_(0.2)
        model.log_sigma.fill_(math.log(1.3))


@pytest.mark.parametrize("network", CONTROL_NETWORKS)
@pytest.mark.parametrize("gate", [False, True])
@pytest.mark.parametrize("sampler", BRIDGE_SAMPLERS)
def test_target_equal_to_prior_gives_constant_R(sampler, gate, network):
    """Zero control and target = Z * prior: R = -log Z for every trajectory, ESS = 1, log Z_hat exact. (With the gate
    this shows that the zero-initialised gate adds exactly nothing; its maths is checked by the closed-form test.)"""
    model = _model(sampler, 3, 16, init_std=1.7, gate=gate, network=network)
    with torch.no_grad():
        model.prior_mean.copy_(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
        model.prior_log_std.copy_(torch.log(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)))
    target = _PriorTimesZ(model, log_Z=2.75)
    path = simulate(model, target, 256, torch.Generator().manual_seed(0))
    R = path.log_rn.detach()
    assert torch.allclose(R, torch.full_like(R, -2.75), atol=1e-10)
    assert M.ess(R) == pytest.approx(1.0, abs=1e-12)
    assert M.log_z_hat(R) == pytest.approx(2.75, abs=1e-10) and M.elbo(R) == pytest.approx(2.75, abs=1e-10)
    assert path.x.std(0).detach() == pytest.approx(torch.tensor([0.5, 1.0, 2.0]), rel=0.2)  # moved as the prior


class _PriorTimesZ(Gaussian):
    """Z times the (current) prior of a model: the trivially solved problem."""

    def __init__(self, model: BridgeSampler, log_Z: float):
        self.dim, self.log_Z = model.cfg.dim, log_Z
        self.mean, self.std = model.prior_mean.detach().clone(), model.prior_log_std.detach().exp()

    def log_prob(self, x):
        z = (x - self.mean) / self.std
        return self.log_Z - 0.5 * (z**2).sum(-1) - (torch.log(self.std) + 0.5 * math.log(2 * math.pi)).sum()


@pytest.mark.parametrize("sampler", BRIDGE_SAMPLERS)
def test_lv_gradient_vanishes_when_R_is_constant(sampler):
    model = _model(sampler, 2, 8)
    path = simulate(model, _PriorTimesZ(model, 1.0), 64, torch.Generator().manual_seed(0), detach_path=True)
    loss_terms("lv", path).mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and max(float(g.abs().max()) for g in grads) < 1e-9


@pytest.mark.parametrize("sampler", BRIDGE_SAMPLERS)
def test_elbo_below_log_z_and_log_z_hat_consistent(sampler):
    """Untrained but non-trivial sampler: ELBO < log Z (strictly, beyond MC error); log Z_hat near log Z below."""
    model = _model(sampler, 2, 8)
    _randomize_control(model, 0.1)
    target = Gaussian(2, mean=0.5, std=0.8, log_Z=1.5)
    hats, elbos = [], []
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        R = simulate(model, target, 2000, g, detach_path=True).log_rn.detach()
        hats.append(M.log_z_hat(R))
        elbos.append(M.elbo(R))
    hats_t, elbos_t = torch.tensor(hats), torch.tensor(elbos)
    se = float(elbos_t.std() / math.sqrt(len(elbos)))
    assert float(elbos_t.mean()) + 4 * se < 1.5
    # Jensen: E[log Z_hat] <= log Z; consistency: close to log Z for this mildly mismatched sampler
    assert float(hats_t.mean()) <= 1.5 + 4 * float(hats_t.std() / math.sqrt(len(hats)))
    assert float(hats_t.mean()) == pytest.approx(1.5, abs=0.15)


@pytest.mark.parametrize("network", CONTROL_NETWORKS)
@pytest.mark.parametrize("gate", [False, True])
@pytest.mark.parametrize("sampler", BRIDGE_SAMPLERS)
def test_rkl_ld_and_rkl_r_gradients_agree_in_expectation(sampler, gate, network):
    """Both estimate grad E_q[R]; average over many batches and compare within standard errors. With the score
    gate this also checks that the score input is differentiated through the path (a stopped gradient biases rKL-R)."""
    model = _model(sampler, 1, 4, gate=gate, network=network)
    _randomize_control(model)
    target = Gaussian(1, mean=1.0, std=0.6)
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(loss: str, n_batches: int, g: torch.Generator) -> torch.Tensor:
        rows = []
        for _ in range(n_batches):
            path = simulate(model, target, 1024, g, detach_path=DETACHED[loss])
            gs = torch.autograd.grad(loss_terms(loss, path).mean(), params, allow_unused=True)
            gs = [x if x is not None else torch.zeros_like(p) for x, p in zip(gs, params)]
            rows.append(torch.cat([x.flatten() for x in gs]))
        return torch.stack(rows)

    a = grads("rkl-r", 40, torch.Generator().manual_seed(1))
    b = grads("rkl-ld", 40, torch.Generator().manual_seed(2))
    diff = a.mean(0) - b.mean(0)
    se = torch.sqrt(a.var(0) / len(a) + b.var(0) / len(b))
    big = a.mean(0).abs() > 5 * a.std(0) / math.sqrt(len(a))  # components clearly non-zero
    assert int(big.sum()) >= 3
    assert bool((diff.abs() < 5 * se + 1e-6).all()), (diff / (se + 1e-12)).abs().max()


@pytest.mark.parametrize("network", CONTROL_NETWORKS)
@pytest.mark.parametrize("sampler", BRIDGE_SAMPLERS)
def test_score_gate_adds_gated_closed_form_score(sampler, network):
    """A gated network with a zero MLP and constant gates c is the drift c * score, with the score in closed form:
    grad log p~ for DIS/DBS and grad log p_0 + beta_k (grad log p~ - grad log p_0) for CMCD. Re-simulated by hand
    with the same noise, x and R agree to rounding."""
    dim, K, n = 2, 3, 5
    model = _model(sampler, dim, K, gate=True, network=network)
    c = torch.tensor([0.3, -0.2, 0.15, 0.4], dtype=torch.float64)[: model.net.gate[-1].out_features]
    with torch.no_grad():
        model.net.gate[-1].bias.copy_(c)
        model.prior_mean.copy_(torch.tensor([0.2, -0.1], dtype=torch.float64))
        model.prior_log_std.fill_(math.log(1.5))
        model.log_sigma.fill_(math.log(1.2))
        if sampler == "cmcd":
            model.beta_logits.copy_(torch.tensor([0.5, -0.3, 0.1], dtype=torch.float64))
    target = Gaussian(dim, mean=0.7, std=0.6, log_Z=0.4)
    path = simulate(model, target, n, torch.Generator().manual_seed(3), detach_path=True)

    with torch.no_grad():
        mu, s2 = model.prior_mean, torch.exp(2 * model.prior_log_std)
        diff = torch.exp(2 * model.log_sigma)
        rho, log_v = model.reference_kernel()
        betas = model.betas() if sampler == "cmcd" else None

        def drifts(x, k):
            target_score, prior_score = -(x - 0.7) / 0.36, -(x - mu) / s2
            if sampler == "dis":
                return diff * c * target_score, torch.zeros_like(x)
            if sampler == "dbs":
                return diff * c[:dim] * target_score, diff * c[dim:] * target_score
            g = target_score - prior_score
            annealed = prior_score + betas[k] * g
            return diff * (betas[k] / 2 * g + c * annealed), diff * (betas[k] / 2 * g - c * annealed)

        gen = torch.Generator().manual_seed(3)
        x = model.sample_prior(n, gen)
        log_r = model.prior_log_prob(x)
        for k in range(K):
            mean_f = mu + rho * (x - mu) + drifts(x, k)[0] / K
            x_new = mean_f + torch.exp(0.5 * log_v) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
            mean_b = mu + rho * (x_new - mu) + drifts(x_new, k + 1)[1] / K
            log_r += gaussian_log_pdf(x_new, mean_f, log_v, sum_last=True) - gaussian_log_pdf(
                x, mean_b, log_v, sum_last=True
            )
            x = x_new
        log_r -= target.log_prob(x)
    assert torch.allclose(path.x, x, atol=1e-12)
    assert torch.allclose(path.log_rn, log_r, atol=1e-10)
    assert float(log_r.std()) > 0.1  # a non-trivial path, not the constant-R case


GRID = [(s, loss) for s in BRIDGE_SAMPLERS for loss in BRIDGE_LOSSES]
QUICK = {("cmcd", "rkl-r"), ("cmcd", "lv"), ("cmcd", "rkl-ld"), ("dis", "rkl-r"), ("dbs", "tb"), ("dis", "lv")}


@pytest.mark.parametrize(
    "sampler, loss", [c if c in QUICK else pytest.param(*c, marks=pytest.mark.slow) for c in GRID]
)  # every sampler x loss with -m slow; the default run covers every sampler and every loss
def test_training_raises_elbo_toward_log_z(sampler, loss):
    """2-D Gaussian target (mean 1, std 0.5, log Z = 0) from a N(0, I) prior: 100 steps close most of the gap."""
    cfg = make_config("gaussian", sampler, steps=8, loss=loss, iters=100, batch=128, lr=3e-2, hidden=(16,))
    run = BridgeRun(cfg)

    def elbo() -> float:
        with torch.no_grad():
            path = simulate(run.model, run.target, 4000, torch.Generator().manual_seed(5), detach_path=True)
        return M.elbo(path.log_rn)

    before = elbo()
    for _ in range(cfg.iters):
        assert run.step()[1]
    after = elbo()
    assert before < after < run.target.log_Z + 0.02
    assert run.target.log_Z - after < 0.75 * (run.target.log_Z - before)


def test_time_embedding_closed_form():
    """[sin(pi 2^k t), cos(pi 2^k t)] for k = 0, 1: the features the control network was trained with."""
    t = torch.tensor([0.25, 1.0])
    expected = torch.tensor(
        [
            [math.sin(math.pi / 4), math.sin(math.pi / 2), math.cos(math.pi / 4), math.cos(math.pi / 2)],
            [math.sin(math.pi), math.sin(2 * math.pi), math.cos(math.pi), math.cos(2 * math.pi)],
        ]
    )
    assert torch.allclose(time_embedding(t, 4), expected, atol=1e-6)
