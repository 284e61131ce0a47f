"""Training with EDM preconditioning and flow matching: the recipe a run records, old configs, and sampling and
diagnosing a preconditioned checkpoint (the loss itself is tested against independent values in test_precond)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffloss.checkpoint import load_checkpoint, save_checkpoint
from diffloss.cli import cli
from diffloss.loader import load_trained
from diffloss.train import CHECKPOINT_FILE, TrainConfig

MLP_ARGS = ["--data", "moons", "--backbone", "mlp", "--width", "32", "--depth", "1", "--batch", "16", "--quiet"]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def recorded(out) -> dict:
    cfg = json.loads((out / "config.json").read_text())
    return {k: cfg[k] for k in ("target", "weighting", "density", "precond")}


@pytest.mark.parametrize(
    "extra, expected",
    [
        ([], {"target": "x0", "weighting": {"name": "edm", "sigma_data": 0.6}, "precond": "edm",
              "density": {"name": "edm-lognormal", "p_mean": -1.2, "p_std": 1.2}}),
        (["--precond", "none", "--target", "eps"], {"target": "eps", "weighting": {"name": "edm", "sigma_data": 0.6},
              "precond": "none", "density": {"name": "edm-lognormal", "p_mean": -1.2, "p_std": 1.2}}),
        (["--weighting", "snr", "--density", "uniform-logsnr"], {"target": "x0", "weighting": {"name": "snr"},
              "precond": "edm", "density": {"name": "uniform-logsnr", "lam_min": -10.0, "lam_max": 10.0}}),
    ],
)  # fmt: skip
def test_process_edm_defaults_to_edms_recipe_and_records_it(tmp_path, extra, expected):
    out = tmp_path / "run"
    args = ["train", *MLP_ARGS, "--process", "edm", "--sigma-data", "0.6", "--steps", "2", "--out", str(out)]
    assert invoke(*args, *extra).exit_code == 0
    assert recorded(out) == expected


def test_other_processes_keep_todays_defaults(tmp_path):
    out = tmp_path / "run"
    assert invoke("train", *MLP_ARGS, "--process", "vp", "--steps", "2", "--out", str(out)).exit_code == 0
    density = {"name": "uniform-t", "discrete": False, "eps": 1e-5}
    assert recorded(out) == {"target": "eps", "weighting": {"name": "constant", "on": "eps"}, "density": density,
                             "precond": "none"}  # fmt: skip


def test_an_old_run_without_precond_loads_and_resumes_as_none(tmp_path):
    out = tmp_path / "run"
    common = ["train", *MLP_ARGS, "--process", "flow", "--target", "flow", "--ckpt-every", "2"]
    assert invoke(*common, "--steps", "2", "--out", str(out)).exit_code == 0
    tensors, meta = load_checkpoint(out / CHECKPOINT_FILE)
    del meta["config"]["precond"], meta["model"]["precond"], meta["model"]["target"]  # as written before them
    save_checkpoint(out / CHECKPOINT_FILE, tensors, meta)
    assert TrainConfig.from_dict(meta["config"]).precond == "none"
    assert load_trained(out).network.precond == "none"
    assert invoke(*common, "--steps", "4", "--out", str(out), "--resume").exit_code == 0
    assert load_checkpoint(out / CHECKPOINT_FILE)[1]["step"] == 4


@pytest.mark.parametrize("precond", ["none", "edm"])
@pytest.mark.parametrize("density", ["uniform-t", "logit-normal"])
def test_flow_matching_trains_samples_and_diagnoses(tmp_path, precond, density):
    """The FM baseline (rectified flow, velocity target u = eps - x0, constant weight), raw or preconditioned."""
    out = tmp_path / "run"
    args = ["train", *MLP_ARGS, "--process", "flow", "--target", "flow", "--density", density, "--precond", precond]
    assert invoke(*args, "--steps", "30", "--log-every", "10", "--out", str(out)).exit_code == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["precond"], cfg["weighting"], cfg["density"]["name"]) == (precond, {"name": "constant", "on": "flow"},
                                                                         density)  # fmt: skip
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(np.isfinite(losses))
    model = load_trained(out)
    assert (model.network.precond, model.target.name) == (precond, "flow")
    samples = tmp_path / "s.npy"
    r = invoke("sample", "--ckpt", str(out), "--n", "64", "--steps", "8", "--out", str(samples), "--quiet")
    assert r.exit_code == 0, r.output
    x = np.load(samples)
    assert x.shape == (64, 2) and np.isfinite(x).all()
    report = tmp_path / "d.json"
    r = invoke("diagnose", "--ckpt", str(out), "--data", "moons", "--sigmas", "0.1,1,10", "--queries", "64",
               "--json", str(report), "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    levels = json.loads(report.read_text())["levels"]
    assert len(levels) == 3 and all(lv["gap_x0"] >= 0 and np.isfinite(lv["model_loss"]) for lv in levels)


def test_preconditioned_output_is_the_target_prediction_of_d(tmp_path):
    """The loaded network's flow prediction is (x_t - D) / t, D = c_skip * x~ + c_out * F, x~ = x_t / (1 - t)."""
    out = tmp_path / "run"
    args = ["train", *MLP_ARGS, "--process", "flow", "--target", "flow", "--precond", "edm", "--sigma-data", "0.8"]
    assert invoke(*args, "--steps", "3", "--out", str(out)).exit_code == 0
    net = load_trained(out).network
    t = torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)
    x_t = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s, sd = (t / (1 - t))[:, None], 0.8
    x_tilde = x_t / (1 - t)[:, None]
    with torch.no_grad():
        f = net.net((x_tilde / (s**2 + sd**2).sqrt()).float(), (250 * s.log()).float().reshape(-1)).double()
        u = net(x_t.float(), t.float()).double()
    d = sd**2 / (s**2 + sd**2) * x_tilde + s * sd / (s**2 + sd**2).sqrt() * f
    assert torch.allclose(u, (x_t - d) / t[:, None], rtol=1e-4, atol=1e-5)
