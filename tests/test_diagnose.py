"""`diffloss diagnose`: model loss vs the optimal loss on common draws, against brute-force references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffloss.cli import cli
from diffloss.diagnose import diagnose
from diffloss.errors import DifflossError
from diffloss.levels import Levels
from diffloss.loader import DiffusionModel
from diffloss.optimal.exact import exact_optimal_loss, query_block
from diffloss.process import get_process
from diffloss.target import get_target

SIGMAS = np.array([0.02, 0.2, 0.7, 2.0, 10.0])


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    rng = np.random.default_rng(1)
    centers = rng.normal(size=(4, 3))
    return (centers[rng.integers(0, 4, 160)] + 0.3 * rng.normal(size=(160, 3)) + 2.0).astype(np.float32)


def brute_posterior_mean(x: torch.Tensor, s: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """float64 softmax over all rows of -||x - y||^2 / (2 s^2), times the rows."""
    logit = -((x[:, None, :] - rows[None]) ** 2).sum(-1) / (2 * s[:, None] ** 2)
    return torch.softmax(logit, 1) @ rows


def bayes_model(x: np.ndarray, process, target, offset: np.ndarray | None = None) -> DiffusionModel:
    """The exact optimal denoiser (brute force), shifted in x0 by a constant ``offset``, predicting ``target``."""
    rows = torch.from_numpy(x).double()
    delta = torch.zeros(x.shape[1], dtype=torch.float64) if offset is None else torch.from_numpy(offset)

    def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = (v[:, None] for v in process.alpha_sigma(t.double()))
        x0_hat = brute_posterior_mean(x_t.double() / a, (s / a)[:, 0], rows) + delta
        return target.from_x0(x0_hat, x_t.double(), a, s).float()

    return DiffusionModel(denoiser, process, target, (x.shape[1],))


def levels_of(process, sigmas=SIGMAS) -> Levels:
    return Levels.from_logsnr(process, torch.from_numpy(-2 * np.log(sigmas)))


@pytest.mark.parametrize("target", ["x0", "eps"])
def test_exact_denoiser_has_zero_gap(data, target):
    proc, tgt = get_process("vp"), get_target(target)
    d = diagnose(bayes_model(data, proc, tgt), data, levels_of(proc), queries=256, seed=3)
    assert not d.below_optimal.any() and d.warning() is None
    # the gap estimator is ~0 up to fp32 rounding of the model's output; the paired difference is 0 within noise
    assert np.all(d.gap_x0 <= 1e-9 + 1e-6 * d.optimal_x0)
    assert np.all(np.abs(d.paired_x0) <= 4 * d.paired_x0_se + 1e-9)
    # J* equals the brute-force ||m - x0||^2 / D on the documented draws (block 0 of default_rng([seed, 0]))
    idx, eps = query_block(len(data), data.shape[1], [3], 0, 256, None)
    x0 = torch.from_numpy(data[idx]).double()
    for k, s in enumerate(SIGMAS):
        sk = torch.full((256,), s, dtype=torch.float64)
        m = brute_posterior_mean(x0 + s * torch.from_numpy(eps).double(), sk, torch.from_numpy(data).double())
        ref = ((m - x0) ** 2).mean(1).mean().item()
        # (far rows' distances come from fp32 Gram products: logit errors ~1e-7 * ||y||^2 / s^2)
        assert d.optimal_x0[k] == pytest.approx(ref, rel=1e-5, abs=1e-12)
    # and agrees with the exact optimal-loss estimator (a different, variance-reduced form of the same draws)
    ex = exact_optimal_loss(data, SIGMAS, queries=256, seed=3)
    assert np.all(np.abs(ex.x0_mse - d.optimal_x0) <= 4 * np.hypot(ex.stderr, d.optimal_x0_se) + 1e-12)


@pytest.mark.parametrize("target", ["x0", "eps", "v"])
def test_offset_model_gap_is_its_known_excess(data, target):
    proc, tgt = get_process("vp"), get_target(target)
    offset = np.array([0.05, -0.1, 0.02])
    excess = float((offset**2).mean())  # E||delta||^2 / D
    d = diagnose(bayes_model(data, proc, tgt, offset), data, levels_of(proc), queries=256)
    np.testing.assert_allclose(d.gap_x0, excess, rtol=1e-5)
    assert np.all(np.abs(d.paired_x0 - excess) <= 4 * d.paired_x0_se)
    snr = SIGMAS**-2.0
    factor = {"x0": np.ones_like(snr), "eps": snr, "v": snr + 1}[target]  # MSE_T / MSE_x0 on VP (Target.loss_factor)
    np.testing.assert_allclose(d.gap_target, excess * factor, rtol=1e-5)
    np.testing.assert_allclose(d.model_target, d.model_x0 * factor, rtol=1e-4)
    np.testing.assert_allclose(d.ratio, excess / d.model_x0, rtol=1e-5)
    assert "furthest from optimal at s = 0.02" in d.summary()  # J* ~ 0 there: the whole loss is the offset


def test_zero_noise_predictor_has_closed_form_loss(data):
    """eps_hat = 0 gives x0_hat = x_t / alpha, so J_x0 = s^2 E||eps||^2 / D = s^2 and J_eps = 1 (up to MC error)."""
    proc = get_process("vp-cosine")
    model = DiffusionModel(lambda x_t, c: torch.zeros_like(x_t), proc, get_target("eps"), (3,))
    d = diagnose(model, data, levels_of(proc), queries=512)
    assert np.all(np.abs(d.model_x0 / SIGMAS**2 - 1) <= 4 * d.model_x0_se / SIGMAS**2)
    assert np.all(np.abs(d.model_target - 1) <= 4 * d.model_target_se)
    assert np.all(d.gap_x0 > 0) and not d.below_optimal.any()


def test_posterior_cache_reuses_the_posterior_means_and_changes_nothing(data, monkeypatch):
    """Two models diagnosed on the same draws with one ``posterior`` dict: the posterior is computed once (per
    query block), and each diagnosis equals the one without the cache; other levels or seeds compute anew."""
    import diffloss.diagnose as dg

    proc, tgt = get_process("vp"), get_target("x0")
    models = [bayes_model(data, proc, tgt), bayes_model(data, proc, tgt, np.array([0.1, 0.0, -0.2]))]
    plain = [diagnose(m, data, levels_of(proc), queries=300, seed=2) for m in models]
    calls = []
    real = dg.class_posterior_mean
    monkeypatch.setattr(dg, "class_posterior_mean", lambda *a: calls.append(1) or real(*a))
    cache: dict = {}
    cached = [diagnose(m, data, levels_of(proc), queries=300, seed=2, posterior=cache) for m in models]
    assert len(calls) == 2 and len(cache) == 2  # 300 queries = 2 blocks, computed for the first model only
    for a, b in zip(plain, cached):
        for key in ("model_x0", "optimal_x0", "gap_x0", "gap_x0_se", "model_target"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    diagnose(models[0], data, levels_of(proc, SIGMAS[:2]), queries=300, seed=2, posterior=cache)
    diagnose(models[0], data, levels_of(proc), queries=300, seed=3, posterior=cache)
    assert len(calls) == 6 and len(cache) == 6


def oracle_model(data: np.ndarray) -> DiffusionModel:
    """A 'model' that knows the noise of the first 128 draws of seed 0 (as a leaky wrapper would): it beats J*."""
    _, eps = query_block(len(data), data.shape[1], [0], 0, 128, None)

    def oracle(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(eps) * 0.9 + 0.1 * (x_t - x_t.mean(0))

    return DiffusionModel(oracle, get_process("vp"), get_target("eps"), (data.shape[1],))


def test_model_that_sees_more_than_x_t_is_flagged(data):
    d = diagnose(oracle_model(data), data, levels_of(get_process("vp"), np.array([0.5, 2.0])), queries=128, batch=128)
    assert d.below_optimal.all() and "below the optimal loss" in d.warning()


# ---- CLI ------------------------------------------------------------------------------------------------------


def run(args):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    from diffloss.data import load_digits_dataset

    path = tmp_path_factory.mktemp("digits") / "digits.npy"
    np.save(path, load_digits_dataset().images()[:150])
    return path


def test_diffusers_end_to_end(tmp_path, digits_file, tiny_diffusers):
    from diffusers import DDPMScheduler

    unet = tiny_diffusers(tmp_path / "pipe", beta_schedule="squaredcos_cap_v2")
    out = tmp_path / "diag.json"
    r = run(["diagnose", "--diffusers", str(tmp_path / "pipe"), "--data", str(digits_file), "--sigmas",
             "0.05,1,20", "--queries", "64", "--json", str(out), "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["model"]["target"] == "v" and doc["model"]["process"]["name"] == "vp-cosine"
    assert doc["warning"] is None and not doc["below_optimal"]
    for lv in doc["levels"]:  # a random network is far from optimal, beyond noise
        assert lv["paired_gap_x0"] > 4 * lv["paired_gap_x0_stderr"] and lv["gap_x0"] > 4 * lv["gap_x0_stderr"]
    # the model loss at each level recomputed with diffusers' own conventions (add_noise, get_velocity)
    sched = DDPMScheduler.from_pretrained(tmp_path / "pipe" / "scheduler")
    x = torch.from_numpy(np.load(digits_file).reshape(150, -1))
    idx, eps = query_block(150, 64, [0], 0, 64, None)
    x0, e = x[idx].reshape(-1, 1, 8, 8), torch.from_numpy(eps).reshape(-1, 1, 8, 8)
    for lv in doc["levels"]:
        n = torch.full((64,), lv["timestep"], dtype=torch.long)
        ab = sched.alphas_cumprod[lv["timestep"]].item()
        assert lv["sigma"] == pytest.approx(((1 - ab) / ab) ** 0.5, rel=2e-5)  # diffusers: fp32 cumprod
        with torch.no_grad():
            pred = unet(sched.add_noise(x0, e, n), n).sample
        ref = (pred - sched.get_velocity(x0, e, n)).pow(2).mean().item()
        assert lv["model_loss"] == pytest.approx(ref, rel=1e-4)


def test_ckpt_of_a_train_run(tmp_path):
    run_dir = tmp_path / "run"
    r = run(["train", "--data", "moons", "--process", "flow", "--target", "flow", "--steps", "20", "--backbone",
             "mlp", "--width", "32", "--depth", "1", "--out", str(run_dir), "--quiet"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out, csv_out, png = tmp_path / "d.json", tmp_path / "d.csv", tmp_path / "d.png"
    r = run(["diagnose", "--ckpt", str(run_dir), "--data", "moons", "--levels", "4", "--queries", "128",
             "--json", str(out), "--csv", str(csv_out), "--plot", str(png)])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["model"]["target"] == "flow" and doc["model"]["ema"] is True and len(doc["levels"]) == 4
    assert doc["summary"].startswith("furthest from optimal") and doc["summary"] in r.output
    s = np.array([lv["sigma"] for lv in doc["levels"]])
    np.testing.assert_allclose(s, np.geomspace(0.002, 80, 4), rtol=1e-9)
    for lv in doc["levels"]:
        assert lv["gap_x0"] >= 0 and not lv["below_optimal"]
        t = lv["t"]
        assert lv["loss_factor"] == pytest.approx(1 / t**2, rel=1e-9)  # MSE_u = MSE_x0 / t^2 on flow
        assert lv["optimal_loss"] == pytest.approx(lv["optimal_x0_mse"] / t**2, rel=1e-9)
    assert len(csv_out.read_text().splitlines()) == 5 and png.stat().st_size > 0


def test_cli_warns_on_stderr_and_in_json(tmp_path, data, monkeypatch):
    import diffloss.cli.diagnose as cli_diagnose

    monkeypatch.setattr(cli_diagnose, "load_trained", lambda path, ema: oracle_model(data))
    np.save(tmp_path / "x.npy", data)
    out = tmp_path / "w.json"
    r = run(["diagnose", "--ckpt", "leaky", "--data", str(tmp_path / "x.npy"), "--sigmas", "0.5,2", "--queries",
             "128", "--batch", "128", "--json", str(out), "--quiet"])  # fmt: skip
    assert r.exit_code == 0 and r.stderr.startswith("Warning: the model's loss is below the optimal loss")
    doc = json.loads(out.read_text())
    assert doc["below_optimal"] and all(lv["below_optimal"] for lv in doc["levels"]) and doc["warning"]


def _fail(args, out):
    r = run(args + ["--json", str(out)])
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("Error:"), r.output
    assert not out.exists()
    return r.output


def test_bad_inputs(tmp_path, digits_file, tiny_diffusers):
    out = tmp_path / "bad.json"
    pipe = tmp_path / "pipe"
    tiny_diffusers(pipe)
    base = ["diagnose", "--data", str(digits_file)]
    assert "no such run directory" in _fail(base + ["--ckpt", str(tmp_path / "nope")], out)
    assert "no such directory" in _fail(base + ["--diffusers", str(tmp_path / "nope")], out)
    (tmp_path / "empty").mkdir()
    assert "no UNet2DModel" in _fail(base + ["--diffusers", str(tmp_path / "empty")], out)
    assert "exactly one of" in _fail(base + ["--diffusers", str(pipe), "--ckpt", str(pipe)], out)
    assert "outside the range" in _fail(base + ["--diffusers", str(pipe), "--sigmas", "1e6"], out)
    assert "shape" in _fail(["diagnose", "--data", "moons", "--diffusers", str(pipe)], out)
    cfg_path = pipe / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    for change, message in [
        ({"_class_name": "DDIMScheduler"}, "not supported"),
        ({"prediction_type": "flow_prediction"}, "prediction_type"),
        ({"beta_schedule": "scaled_linear"}, "beta_schedule"),
    ]:
        cfg_path.write_text(json.dumps({**cfg, **change}))
        assert message in _fail(base + ["--diffusers", str(pipe)], out)
    cfg_path.write_text(json.dumps(cfg))
    for weights in (pipe / "unet").glob("*.safetensors"):
        weights.write_bytes(b"not weights")
    assert "cannot load the UNet2DModel" in _fail(base + ["--diffusers", str(pipe)], out)


@pytest.mark.parametrize("cls", ["DDPMScheduler", "EulerDiscreteScheduler"])
@pytest.mark.parametrize("schedule", ["linear", "squaredcos_cap_v2"])
def test_scheduler_maps_to_a_process_with_its_alphas_cumprod(cls, schedule):
    import diffusers

    from diffloss.loader import scheduler_process

    sched = getattr(diffusers, cls)(num_train_timesteps=500, beta_schedule=schedule, beta_end=0.03)
    proc = scheduler_process(dict(sched.config, _class_name=cls))
    assert proc.discrete and proc.T == 500
    np.testing.assert_allclose(proc.alphas_cumprod().numpy(), sched.alphas_cumprod.numpy(), rtol=2e-5)


def test_diagnose_run_is_diagnose_of_a_runs_ema_model_on_its_data(tmp_path):
    """The experiments' one way to diagnose a training run: the CLI's levels, the EMA model, the given data."""
    from conftest import small_train_config
    from diffloss.data import load_dataset
    from diffloss.diagnose_output import diagnose_run, diagnosis_levels
    from diffloss.loader import load_trained
    from diffloss.train import train

    train(small_train_config(steps=2, ckpt_every=2), tmp_path / "run")
    model = load_trained(tmp_path / "run")
    x = load_dataset("moons").x
    got = diagnose_run(tmp_path / "run", "moons", sigmas=[0.5, 2.0], queries=64, seed=3)
    want = diagnose(model, x, diagnosis_levels(model, [0.5, 2.0], None), queries=64, seed=3)
    assert got.sigmas.tolist() == pytest.approx([0.5, 2.0])
    np.testing.assert_array_equal(got.model_x0, want.model_x0)
    np.testing.assert_array_equal(got.optimal_x0, want.optimal_x0)
    assert len(diagnose_run(tmp_path / "run", "moons", levels=3, queries=32).sigmas) == 3
    with pytest.raises(DifflossError, match="shape"):
        diagnose_run(tmp_path / "run", "digits", levels=2, queries=8)
