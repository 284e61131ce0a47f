"""``diffloss sample``: a trained run's samples land on the data distribution, deterministically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from diffloss.cli import cli
from diffloss.data.images import image_grid
from diffloss.loader import load_trained

MEAN, STD = 0.5, 0.2


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def gaussian_data(root):
    """4000 draws of 1-D N(0.5, 0.2^2) in ROOT/gauss.npy."""
    np.save(root / "gauss.npy", MEAN + STD * np.random.default_rng(0).standard_normal((4000, 1)))
    return root / "gauss.npy"


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    """An MLP trained on 1-D N(0.5, 0.2^2) data (x0 target, EDM process, weighting and density)."""
    root = tmp_path_factory.mktemp("gauss")
    gaussian_data(root)
    args = ["train", "--data", str(root / "gauss.npy"), "--process", "edm", "--target", "x0", "--weighting", "edm"]
    args += ["--backbone", "mlp", "--width", "64", "--depth", "2", "--steps", "600", "--batch", "256"]
    args += ["--lr", "3e-3", "--warmup", "50", "--ema-decay", "0.99", "--out", str(root / "run"), "--quiet"]
    assert invoke(*args).exit_code == 0
    return root / "run"


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    """The same data and objective on DDPM's discrete VP chain (T = 1000 linear betas), trained from Python since
    ``diffloss train --process`` takes a name only."""
    from diffloss.models import backbone_config
    from diffloss.objective import build_objective
    from diffloss.process import get_process
    from diffloss.train import TrainConfig, train

    root = tmp_path_factory.mktemp("ddpm")
    proc = get_process("vp", discrete=True)
    objective = build_objective("x0", "edm", "edm-lognormal", proc, None)
    cfg = TrainConfig(
        data=str(gaussian_data(root)), process=proc.to_dict(), target="x0", weighting=objective.weighting.to_dict(),
        density=objective.density.to_dict(), backbone=backbone_config("mlp", (1,), "tiny", None, 64, 2), steps=600,
        batch=256, lr=3e-3, warmup=50, ema_decay=0.99,
    )  # fmt: skip
    train(cfg, root / "ddpm")
    return root / "ddpm"


def assert_matches_data(run, tmp_path, sampler, *extra):
    out = tmp_path / "s.npy"
    args = ["sample", "--ckpt", str(run), "--n", "3000", "--steps", "25", "--sampler", sampler, *extra]
    assert invoke(*args, "--seed", "1", "--out", str(out), "--quiet").exit_code == 0
    x = np.load(out)
    assert x.shape == (3000, 1) and x.dtype == np.float32
    assert abs(x.mean() - MEAN) < 0.03  # stderr of the mean is 0.004; the rest is model error
    assert abs(x.std() / STD - 1) < 0.15
    assert not out.with_suffix(".png").exists()  # not image data


@pytest.mark.parametrize(
    "sampler, extra",
    [
        ("euler", []),
        ("heun", []),
        ("dpm2", []),
        ("ddim", []),
        ("edm", ["--s-churn", "10", "--s-tmin", "0.05", "--s-tmax", "50", "--s-noise", "1.003"]),
    ],
)
def test_samples_match_the_data_distribution(gaussian_run, tmp_path, sampler, extra):
    assert_matches_data(gaussian_run, tmp_path, sampler, *extra)


@pytest.mark.parametrize("sampler", ["ddpm", "ddpm-large"])
def test_ddpm_samples_match_the_data_distribution(ddpm_run, tmp_path, sampler):
    """DDPM's chain respaced to 100 of its 1000 steps (fixed-small variance: a variance deficit that shrinks with
    the steps, see tests/test_sample.py)."""
    assert_matches_data(ddpm_run, tmp_path, sampler, "--steps", "100")


def test_same_seed_same_samples_and_ema_by_default(gaussian_run, tmp_path):
    def draw(name: str, *extra: str) -> np.ndarray:
        out = tmp_path / f"{name}.npy"
        args = ["sample", "--ckpt", str(gaussian_run), "--n", "50", "--steps", "5", "--out", str(out), "--quiet"]
        assert invoke(*args, *extra).exit_code == 0
        return np.load(out)

    a, b, c = draw("a", "--seed", "3"), draw("b", "--seed", "3"), draw("c", "--seed", "4")
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, draw("raw", "--seed", "3", "--no-ema"))
    assert np.allclose(a, draw("chunked", "--seed", "3", "--batch", "7"), atol=1e-5)
    ema = load_trained(gaussian_run).network.state_dict()
    raw = load_trained(gaussian_run, ema=False).network.state_dict()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)


def test_image_run_writes_png_grid(tmp_path):
    run = tmp_path / "run"
    train = ["train", "--data", "digits", "--channels", "8", "--steps", "2", "--batch", "4", "--out", str(run)]
    assert invoke(*train, "--quiet").exit_code == 0
    out = tmp_path / "d.npy"
    assert invoke("sample", "--ckpt", str(run), "--n", "6", "--steps", "2", "--out", str(out), "--quiet").exit_code == 0
    assert np.load(out).shape == (6, 1, 8, 8)
    from PIL import Image

    with Image.open(out.with_suffix(".png")) as im:  # 3 x 2 grid of 8x8 cells, 1-pixel gaps, enlarged 4x
        assert im.size == (4 * (3 * 9 + 1), 4 * (2 * 9 + 1)) and im.mode == "L"


def test_image_grid_layout():
    x = np.stack([np.full((1, 2, 2), -1.0), np.full((1, 2, 2), 1.0), np.full((1, 2, 2), 0.0)])
    g = image_grid(x, cols=2, pad=1)
    expect = np.zeros((7, 7), dtype=np.uint8)
    expect[1:3, 4:6] = 255
    expect[4:6, 1:3] = 128  # 0 -> round(127.5) = 128
    assert np.array_equal(g, expect)
    assert image_grid(x, cols=2, pad=1, scale=2).shape == (14, 14)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--sampler", "nope"], "unknown sampler 'nope'"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--out", "x.txt"], "--out must end in .npy"),
        (["--spacing", "nope"], "unknown step spacing"),
        (["--sampler", "ddpm"], "needs a discrete VP process"),
        (["--sampler", "edm", "--s-churn", "-1"], "S_churn (--s-churn) must be >= 0"),
        (["--sampler", "edm", "--s-noise", "0"], "S_noise (--s-noise) must be > 0"),
        (["--sampler", "edm", "--s-tmin", "2", "--s-tmax", "1"], "0 <= S_tmin <= S_tmax"),
        (["--sampler", "heun", "--s-churn", "5"], "apply to the edm sampler only"),
    ],
)
def test_bad_sample_input(gaussian_run, tmp_path, extra, needle):
    args = ["sample", "--ckpt", str(gaussian_run), "--n", "4", "--steps", "3", "--out", str(tmp_path / "s.npy")]
    result = invoke(*args, *extra, "--quiet")
    assert result.exit_code != 0 and needle in result.output and len(result.output.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_missing_or_corrupt_checkpoint(tmp_path):
    out = str(tmp_path / "s.npy")
    result = invoke("sample", "--ckpt", str(tmp_path / "none"), "--out", out, "--quiet")
    assert result.exit_code != 0 and "no such run directory" in result.output
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    result = invoke("sample", "--ckpt", str(tmp_path / "bad.safetensors"), "--out", out, "--quiet")
    assert result.exit_code != 0 and ("corrupt" in result.output or "not a diffloss" in result.output)
    assert not (tmp_path / "s.npy").exists()


def test_a_cli_trained_discrete_vp_run_samples_with_ddpm(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(
        cli,
        ["train", "--data", "moons", "--process", "vp:discrete=true", "--target", "eps", "--backbone", "mlp",
         "--width", "16", "--steps", "4", "--batch", "16", "--quiet", "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["process"]["discrete"] is True
    npy = tmp_path / "s.npy"
    r = CliRunner().invoke(cli, ["sample", "--ckpt", str(out), "--sampler", "ddpm", "--steps", "10", "--n", "8",
                                 "--out", str(npy)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert np.load(npy).shape == (8, 2)
