"""The floor of a training objective (``diffloss.optimal.floor``) against independent references: the quadrature
rule against polynomials and a closed form, the floor against the Monte Carlo mean of ``diffusion_loss`` with the
exact posterior-mean denoiser, and ``diffloss train``'s reducible_loss against the floor it logs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffloss.cli import cli
from diffloss.data import load_dataset
from diffloss.losses import diffusion_loss
from diffloss.objective import Objective, build_objective
from diffloss.optimal import data_jstar, objective_floor, table_jstar
from diffloss.optimal.floor import clenshaw_curtis
from diffloss.process import get_process


@pytest.mark.parametrize("n", [2, 8, 16, 64])
def test_clenshaw_curtis_is_exact_for_polynomials_up_to_degree_n(n):
    u, w = clenshaw_curtis(n)
    for k in range(n + 1):
        assert w @ u**k == pytest.approx(1 / (k + 1), rel=1e-12, abs=1e-14)
    assert np.all(np.diff(u) > 0) and u[0] == 0 and u[-1] == 1


def test_floor_of_a_closed_form_curve_with_uniform_levels():
    """J*(lambda) = 1 / (1 + exp(lambda)) (the J* of a 1-D standard Gaussian at s^2 = exp(-lambda) in x0 units),
    constant x0 weight, lambda ~ U(-4, 4): total = (1/8) * int_{-4}^{4} dlambda / (1 + e^lambda) = 1/2 exactly."""
    process = get_process("vp")
    obj = build_objective("x0", "constant", "uniform-logsnr:lam_min=-4,lam_max=4", process, load_dataset("moons"))

    def jstar(s):
        lam = -2 * np.log(s)
        return 1 / (1 + np.exp(lam)), np.zeros(len(s)), np.full(len(s), np.nan)

    floor = objective_floor(obj, process, jstar)
    assert floor.total == pytest.approx(0.5, rel=1e-6)
    assert floor.quadrature_error < 1e-6 and floor.stderr == 0 and floor.rare_event_bound == 0 and floor.converged


def _posterior_mean_denoiser(rows: torch.Tensor, process, target):
    """The Bayes-optimal model for the empirical distribution of ``rows`` (float64), predicting ``target``."""

    def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = (v[:, None] for v in process.alpha_sigma(t))
        x = x_t.double() / a
        logits = -((x[:, None, :] - rows[None]) ** 2).sum(-1) / (2 * (s / a) ** 2)
        m = torch.softmax(logits, 1) @ rows
        return target.from_x0(m, x_t.double(), a, s).to(x_t.dtype)

    return denoiser


@pytest.mark.parametrize(
    "process, target, weighting, density",
    [
        ("vp", "eps", "constant:on=eps", "uniform-logsnr:lam_min=-4,lam_max=4"),
        ("edm", "x0", "edm", "edm-lognormal"),
        ("flow", "flow", "constant:on=flow", "default"),
    ],
)
def test_floor_equals_the_training_loss_of_the_posterior_mean(process, target, weighting, density):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 2)).astype(np.float32)
    proc = get_process(process)
    from diffloss.data import Dataset

    ds = Dataset(x, (2,), "toy")
    obj = build_objective(target, weighting, density, proc, ds)
    floor = objective_floor(obj, proc, data_jstar(ds, queries=8192, cache=False))

    rows = torch.from_numpy(x).double()
    den = _posterior_mean_denoiser(rows, proc, obj.target)
    gen = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(8):
        x0 = rows[torch.randint(len(rows), (8192,), generator=gen)]
        loss, _ = diffusion_loss(
            den, x0, process=proc, target=obj.target, weighting=obj.weighting, density=obj.density, generator=gen
        )
        losses.append(loss)
    loss = torch.cat(losses)
    mc, mc_se = loss.mean().item(), loss.std().item() / math.sqrt(len(loss))
    tol = 4 * math.hypot(mc_se, floor.stderr) + floor.quadrature_error
    assert abs(floor.total - mc) < tol, (floor.total, mc, mc_se, floor.stderr)


def test_table_floor_interpolates_the_table():
    process = get_process("ve")
    obj = Objective(*_constant_objective(process))
    flat = table_jstar(([-10.0, 10.0], [0.3, 0.3]))
    assert objective_floor(obj, process, flat).total == pytest.approx(0.3, rel=1e-12)


def _constant_objective(process):
    o = build_objective("x0", "constant", "uniform-logsnr:lam_min=-2,lam_max=2", process, load_dataset("moons"))
    return o.target, o.weighting, o.density


def test_cli_reports_the_floor_and_train_logs_reducible_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLOSS_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    spec = ["--weighting", "constant:on=flow", "--density", "uniform-t"]
    j = tmp_path / "j.json"
    r = runner.invoke(
        cli,
        ["optimal-loss", "--data", "moons", "--process", "flow", "--target", "flow", "--levels", "32",
         "--queries", "512", *spec, "--json", str(j)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(j.read_text())
    obj = doc["objective"]
    assert obj["target"] == "flow" and obj["weighting"]["name"] == "constant" and obj["density"]["name"] == "uniform-t"
    assert obj["total"] > 0 and obj["stderr"] > 0 and "objective floor" in r.output
    out = tmp_path / "run"
    r = runner.invoke(
        cli,
        ["train", "--data", "moons", "--process", "flow", "--target", "flow", "--backbone", "mlp", "--width", "16",
         *spec, "--optimal-loss", str(j), "--steps", "4", "--batch", "8", "--log-every", "2", "--quiet",
         "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = [json.loads(v) for v in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for rec in lines:
        assert rec["reducible_loss"] == pytest.approx(rec["loss"] - rec["loss_floor"])
        # the train-side floor comes from the 32-level table by interpolation: close to the report's total
        assert rec["loss_floor"] == pytest.approx(obj["total"], rel=0.05)
