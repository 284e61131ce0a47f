"""Divergence as the reference reports it: the ELBO-collapse detector, the best-ELBO checkpoint beside the final
one, and the SDE state (sigma, CMCD's beta schedule) logged with every evaluation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from diffloss.bridge import BridgeRun, make_config, train_bridge
from diffloss.bridge.monitor import (
    BETA_GRID,
    COLLAPSE_NATS,
    EULER_LIMIT,
    collapse_margin,
    elbo_collapsed,
    euler_curvature,
    euler_unstable,
)
from diffloss.bridge.samplers import BridgeSampler, SamplerConfig
from diffloss.bridge.targets import SAMPLING_TARGETS
from diffloss.bridge.targets.synthetic import Gaussian
from diffloss.bridge.train import BEST_CHECKPOINT, CHECKPOINT, EVAL_SEED_OFFSET, evaluate_checkpoint


def test_collapse_threshold():
    assert collapse_margin(-700.0) == COLLAPSE_NATS and collapse_margin(-5e4) == 5e4
    assert elbo_collapsed(-4e13, -700.0) and elbo_collapsed(None, -700.0) and elbo_collapsed(float("nan"), None)
    assert not elbo_collapsed(-705.0, -700.0) and not elbo_collapsed(-1e9, None)
    assert not elbo_collapsed(-1.5e5, -1e5) and elbo_collapsed(-2.1e5, -1e5)


class _ExplodesFromCall(Gaussian):
    """A Gaussian whose log density drops by 1e8 nats (finite: only the ELBO test can see it) from the 6th call on:
    with DIS, calls are step 1, step 2, evaluation at 2, step 3, step 4, evaluation at 4."""

    def __init__(self):
        super().__init__(dim=2)
        self.calls = 0

    def log_prob(self, x):
        self.calls += 1
        return super().log_prob(x) - (1e8 if self.calls >= 6 else 0.0)


def _cfg(target: str, sampler: str = "dis", **kw):
    base = dict(steps=4, hidden=(8,), loss="rkl-ld", iters=10, batch=16, eval_every=2, eval_n=64)
    return make_config(target, sampler, **{**base, **kw})


def test_detector_fires_on_a_blow_up_and_keeps_the_best(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(SAMPLING_TARGETS, "explodes", _ExplodesFromCall)
    m = train_bridge(_cfg("explodes"), tmp_path, quiet=True)
    assert m["diverged_at"] == 4 and m["divergence"] == "elbo collapse" and m["iterations"] == 2
    assert m["best"]["iteration"] == 2 and m["best"]["elbo"] > -100
    assert BridgeRun.load(tmp_path / CHECKPOINT).iteration == 2
    assert BridgeRun.load(tmp_path / BEST_CHECKPOINT).iteration == 2
    assert "the evaluated ELBO collapsed at iteration 4" in capsys.readouterr().err
    assert evaluate_checkpoint(tmp_path, 32, 0, best=True)["iteration"] == 2
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [2, 4, 2] and rows[1]["elbo"] < -1e7


def test_healthy_run_does_not_fire_and_best_is_the_best_elbo(tmp_path):
    cfg = _cfg("gaussian", "cmcd", iters=12, eval_every=3)
    m = train_bridge(cfg, tmp_path, quiet=True)
    assert m["diverged_at"] is None and m["divergence"] is None and m["iterations"] == 12
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert m["best"]["elbo"] == max(r["elbo"] for r in rows)
    best = BridgeRun.load(tmp_path / BEST_CHECKPOINT)
    assert best.iteration == m["best"]["iteration"]
    if best.iteration < cfg.iters:  # a periodic evaluation: same seed, same numbers
        assert best.evaluate(cfg.eval_n, cfg.seed + EVAL_SEED_OFFSET + best.iteration)["elbo"] == pytest.approx(
            m["best"]["elbo"], abs=1e-9
        )
    for r in rows:  # sigma and the beta schedule logged with every evaluation
        assert r["sigma_min"] <= r["sigma_mean"] <= r["sigma_max"] and r["langevin_step"] > 0
        assert len(r["beta"]) == BETA_GRID + 1 and r["beta"][0] == 0.0 and r["beta"][-1] == pytest.approx(1.0)


def test_resume_keeps_the_best_of_the_kept_evaluations(tmp_path):
    cfg = _cfg("gaussian", iters=6, eval_every=2)
    first = train_bridge(cfg, tmp_path, quiet=True)
    again = train_bridge(cfg, tmp_path, quiet=True, resume=True)
    assert again["best"]["elbo"] >= first["best"]["elbo"] and again["diverged_at"] is None


class _Stiff(Gaussian):
    """N(1, 0.02^2) in 2 dimensions: -grad^2 log p~ = 2500 I everywhere, so step * curvature is exact."""

    def __init__(self):
        super().__init__(dim=2, mean=1.0, std=0.02)


LAMBDA = 1 / 0.02**2


def _sigma_for(ratio: float, steps: int) -> float:
    """The sigma whose Langevin step sigma^2 / (2K) times the curvature LAMBDA is ``ratio``."""
    return math.sqrt(2 * steps * ratio / LAMBDA)


@pytest.mark.parametrize("ratio", [0.5, 1.0, 4.0])
def test_euler_curvature_is_the_step_times_the_curvature(ratio):
    """Constant Hessian 2500 I: the estimate is s * lambda exactly; per-dimension sigma: the largest s_i * lambda."""
    model = BridgeSampler(SamplerConfig("cmcd", 2, 8, hidden=(8,), init_sigma=_sigma_for(ratio, 8))).double()
    got = euler_curvature(model, _Stiff(), torch.Generator().manual_seed(0))
    assert got == pytest.approx(ratio, rel=1e-6)
    assert euler_unstable(got) == (ratio >= EULER_LIMIT)
    with torch.no_grad():
        model.log_sigma[1] = math.log(_sigma_for(3 * ratio, 8))
    assert euler_curvature(model, _Stiff(), torch.Generator().manual_seed(0)) == pytest.approx(3 * ratio, rel=1e-4)
    dis = BridgeSampler(SamplerConfig("dis", 2, 8, hidden=(8,)))
    assert euler_curvature(dis, _Stiff(), torch.Generator().manual_seed(0)) is None and not euler_unstable(None)


def test_unstable_step_fires_on_a_constructed_blow_up_and_not_on_a_healthy_run(tmp_path, monkeypatch, capsys):
    """CMCD on the stiff Gaussian with s * lambda = 4 (the Euler map multiplies errors by |1 - 4| = 3 per step): the
    first evaluation stops the run as "unstable step", though its ELBO is finite and there is no best to collapse
    from; with s * lambda = 1 the same run trains to the end, its estimate logged at every evaluation."""
    monkeypatch.setitem(SAMPLING_TARGETS, "stiff", _Stiff)
    blow_up = _cfg("stiff", "cmcd", steps=8, iters=6, eval_every=2, init_sigma=_sigma_for(4.0, 8), init_std=0.5)
    m = train_bridge(blow_up, tmp_path / "a", quiet=True)
    assert m["divergence"] == "unstable step" and m["diverged_at"] == 2 and m["iterations"] == 0
    assert "stability bound 2" in capsys.readouterr().err
    rows = [json.loads(ln) for ln in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["euler_curvature"] == pytest.approx(4.0, rel=0.05) and rows[0]["elbo"] is not None
    healthy = _cfg("stiff", "cmcd", steps=8, iters=6, eval_every=2, init_sigma=_sigma_for(1.0, 8), init_std=0.5)
    m = train_bridge(healthy, tmp_path / "b", quiet=True)
    assert m["divergence"] is None and m["diverged_at"] is None and m["iterations"] == 6
    rows = [json.loads(ln) for ln in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["euler_curvature"] == pytest.approx(1.0, rel=0.05) for r in rows)
