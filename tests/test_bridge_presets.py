"""``--preset paper``: the table equals the reference's best-run commands it cites, --dry-run prints it with its
sources, a flag given explicitly overrides it, and what the reference has no run for is a one-line error."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from diffloss.bridge.bench.grid import Cell, get_preset
from diffloss.bridge.bench.run import cell_config
from diffloss.bridge.presets import (
    COMMON,
    MEDIUM,
    PAPER,
    diffusion_sigma,
    paper_options,
    paper_row,
    preset_options,
)
from diffloss.cli import cli as diffloss_cli
from diffloss.errors import DifflossError

# Read by hand from sebaleh87/dds_optim (commit 3737faf), Configs/Sweeps/BestRunsSweeps/<file>, the command of the
# section: (--sigma_init, --beta_max, --lr, --Interpol_lr, --batch_size, frozen = --learn_SDE_params_mode prior_only).
READ = {
    ("seeds", "cmcd", "rkl-ld"): ("Seeds.md", "LD", (0.5, 0.1, 0.005, 0.001, 2000, False)),
    ("seeds", "cmcd", "rkl-r"): ("Seeds.md", "rKL Frozen", (1.0, 0.1, 0.002, 0.001, 2000, True)),
    ("german_credit", "cmcd", "lv"): ("Credit.md", "LV Diverges", (0.5, 0.01, 0.002, 0.001, 2000, False)),
    ("german_credit", "dbs", "rkl-ld"): ("Credit_DBS.md", "LD", (0.2, 0.01, 0.001, 0.0, 2000, False)),
    ("gmm40", "cmcd", "lv"): ("GMM.md", "LV new", (80.0, 1.0, 0.00005, 0.01, 2000, False)),
    ("mos", "cmcd", "rkl-ld"): ("MoS.md", "LD", (15.0, 1.0, 0.00001, 0.01, 2000, False)),
    ("lgcp", "cmcd", "lv"): ("LGCP.md", "LV", (1.0, 0.1, 0.005, 0.001, 300, False)),
    ("funnel", "dbs", "lv"): ("Funnel_DBS.md", "LV", (1.0, 0.1, 0.00005, 0.0, 2000, False)),
    ("brownian", "cmcd", "lv"): ("Brownian.md", "LV", (0.5, 0.05, 0.001, 0.001, 2000, False)),
    ("seeds", "dbs", "lv"): ("Seeds_DBS.md", "LV", (0.2, 0.1, 0.0005, 0.0, 2000, False)),
    ("sonar", "cmcd", "rkl-r"): ("Sonar.md", "rKL frozen", (1.0, 0.1, 0.005, 0.001, 2000, True)),
    ("gmm40", "dbs", "rkl-r"): ("GMM_DBS.md", "rKL frozen", (80.0, 1.5, 0.00001, 0.0, 2000, True)),
    ("mos", "dbs", "rkl-r"): ("MoS_DBS.md", "rKL frozen", (15.0, 1.5, 0.00001, 0.0, 2000, True)),
}


def invoke(*args):
    return CliRunner().invoke(diffloss_cli, list(args))


@pytest.mark.parametrize("key", list(READ))
def test_table_equals_the_reference_values_it_cites(key):
    file, section, (std, beta, lr, ilr, batch, frozen) = READ[key]
    row = paper_row(*key)
    assert (row.init_std, row.beta_max, row.lr, row.interpol_lr, row.batch, row.frozen) == (
        std,
        beta,
        lr,
        ilr,
        batch,
        frozen,
    )
    assert row.source == f"Configs/Sweeps/BestRunsSweeps/{file}, section '{section}'"


def test_common_values_and_every_row():
    assert COMMON["steps"][0] == 128 and COMMON["iters"][0] == 40_000 and COMMON["lr_floor"][0] == 0.1
    assert COMMON["score_gate"][0] is True and COMMON["grad_clip"][0] == 1.0
    # SDE_Losses/Base_SDE_Loss.py: three optax chains; Networks/Pisgradnet.py: a forward network for DBS; the gate's
    # input is grads_T1, the interpolated (annealed) gradient, for every bridge type
    assert COMMON["separate_chains"][0] is True and COMMON["dbs_networks"][0] == 2
    assert COMMON["dbs_annealed_score"][0] is True
    pairs = {(t, s) for t, s, _ in PAPER}
    assert len(pairs) == 16 and set(PAPER) == {(t, s, loss) for t, s in pairs for loss in ("rkl-ld", "lv", "rkl-r")}
    for (target, _, loss), row in PAPER.items():
        assert row.frozen == (loss == "rkl-r") and row.batch == (300 if target == "lgcp" else 2000)
        assert row.source.startswith("Configs/Sweeps/BestRunsSweeps/")


def test_diffusion_sigma_gives_the_reference_per_step_noise():
    for beta, std, k in [(0.1, 0.5, 128), (1.0, 80.0, 128), (0.3, 1.0, 32)]:
        sigma = diffusion_sigma(beta, std, k)
        assert math.isclose(std**2 * (1 - math.exp(-(sigma**2) / (k * std**2))), beta**2, rel_tol=1e-12)
    with pytest.raises(DifflossError, match="per-step noise std"):
        diffusion_sigma(1.0, 0.5, 128)


def test_dry_run_prints_the_preset_and_its_sources():
    r = invoke("bridge", "train", "--preset", "paper", "--target", "seeds", "--loss", "rkl-r", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "Configs/Sweeps/BestRunsSweeps/Seeds.md, section 'rKL Frozen'" in r.output
    assert "not implemented yet" not in r.output and "separate_chains = True" in r.output
    cfg = json.loads(r.output[r.output.index("{") :])
    assert cfg["sampler"]["sampler"] == "cmcd" and cfg["lr"] == 0.002 and cfg["batch"] == 2000
    assert cfg["iters"] == 40_000 and cfg["lr_floor"] == 0.1 and cfg["sampler"]["steps"] == 128
    assert cfg["sampler"]["init_std"] == 1.0 and cfg["sampler"]["learn_sigma"] is False
    assert cfg["sampler"]["score_gate"] is True and cfg["sampler"]["network"] == "pis"
    assert cfg["sampler"]["init_sigma"] == pytest.approx(diffusion_sigma(0.1, 1.0, 128))
    assert cfg["separate_chains"] is True and cfg["interpol_lr"] == 0.001
    assert cfg["sampler"]["dbs_networks"] == 1 and cfg["sampler"]["annealed_gate"] is False  # DBS-only settings
    assert "network = pis" in r.output and "--base_net PISgradnet" in r.output
    assert "--preset" in invoke("bridge", "train", "--help").output


def test_flags_override_the_preset():
    r = invoke(
        "bridge", "train", "--preset", "paper", "--target", "gmm40", "--sampler", "dbs", "--loss", "lv",
        "--lr", "0.1", "--batch", "64", "--no-score-gate", "--fixed-sigma", "--network", "mlp", "--dry-run",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.output[r.output.index("{") :])
    assert cfg["lr"] == 0.1 and cfg["batch"] == 64 and cfg["sampler"]["score_gate"] is False
    assert cfg["sampler"]["network"] == "mlp"
    assert cfg["sampler"]["learn_sigma"] is False and cfg["sampler"]["init_std"] == 80.0 and cfg["iters"] == 40_000


def test_without_preset_the_defaults_are_unchanged():
    r = invoke("bridge", "train", "--target", "seeds", "--sampler", "cmcd", "--dry-run")
    cfg = json.loads(r.output)
    assert (cfg["lr"], cfg["lr_floor"], cfg["batch"], cfg["iters"]) == (1e-3, 0.0, 256, 1000)
    assert cfg["sampler"]["score_gate"] is False and cfg["sampler"]["learn_sigma"] is True
    assert cfg["sampler"]["network"] == "mlp"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "many_well", "--loss", "lv"], "no best run for target 'many_well'"),
        (["--target", "seeds", "--sampler", "dis"], "sampler 'dis'"),
        (["--target", "seeds", "--loss", "tb"], "loss 'tb'"),
    ],
)
def test_what_the_reference_lacks_is_a_one_line_error(args, message):
    r = invoke("bridge", "train", "--preset", "paper", *args, "--dry-run")
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1


def test_bench_paper_preset_takes_each_cell_from_the_table():
    cfg = cell_config(Cell("funnel", "cmcd", "lv", 1), get_preset("paper"))
    assert cfg.eval_every == 500
    opts = paper_options("funnel", "cmcd", "lv")
    assert (cfg.lr, cfg.batch, cfg.iters, cfg.seed, cfg.sampler.init_std) == (0.002, 2000, 40_000, 1, 0.5)
    assert cfg.sampler.init_sigma == opts["init_sigma"] and cfg.sampler.network == "pis"
    with pytest.raises(DifflossError, match="no best run"):
        cell_config(Cell("funnel", "dis", "lv", 0), get_preset("paper"))
    small = cell_config(Cell("funnel", "cmcd", "lv", 0), get_preset("small"))
    assert small.lr_floor == 0.0 and small.sampler.score_gate is False and small.sampler.network == "mlp"


def test_init_std_or_steps_given_keep_the_reference_per_step_noise():
    opts = paper_options("seeds", "cmcd", "lv", init_std=2.0, steps=32)
    assert opts["init_sigma"] == pytest.approx(diffusion_sigma(0.1, 2.0, 32))
    assert paper_options("seeds", "cmcd", "lv", init_sigma=3.0)["init_sigma"] == 3.0


def test_dbs_rows_get_two_networks_and_the_annealed_gate():
    r = invoke(
        "bridge", "train", "--preset", "paper", "--target", "seeds", "--sampler", "dbs", "--loss", "lv", "--dry-run"
    )
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.output[r.output.index("{") :])
    assert cfg["sampler"]["dbs_networks"] == 2 and cfg["sampler"]["annealed_gate"] is True
    assert (cfg["lr"], cfg["sampler"]["init_std"], cfg["separate_chains"]) == (0.0005, 0.2, True)
    assert "dbs_networks = 2" in r.output and "not implemented yet" not in r.output
    r = invoke(
        "bridge", "train", "--preset", "paper", "--target", "seeds", "--sampler", "dbs", "--loss", "lv",
        "--dbs-networks", "1", "--target-gate", "--one-chain", "--dry-run",
    )  # fmt: skip
    cfg = json.loads(r.output[r.output.index("{") :])
    assert cfg["sampler"]["dbs_networks"] == 1 and cfg["sampler"]["annealed_gate"] is False
    assert cfg["separate_chains"] is False and cfg["interpol_lr"] is None


def test_medium_is_paper_with_fewer_iterations_only():
    """Every option of --preset medium equals paper's except those MEDIUM names, in bridge train and bench."""
    for key in [("seeds", "cmcd", "lv"), ("gmm40", "dbs", "rkl-r"), ("lgcp", "cmcd", "rkl-ld")]:
        paper, medium = preset_options("paper", *key), preset_options("medium", *key)
        assert set(MEDIUM) == {k for k in paper if paper[k] != medium[k]} == {"iters", "eval_every"}
        assert (medium["iters"], medium["eval_every"]) == (200, 25)
        cfg = cell_config(Cell(key[0], key[1], key[2], 0), get_preset("medium"))
        assert (cfg.iters, cfg.eval_every, cfg.batch, cfg.lr) == (200, 25, paper["batch"], paper["lr"])
    assert get_preset("medium").budget.iterations == MEDIUM["iters"][0]
    r = invoke("bridge", "train", "--preset", "medium", "--target", "seeds", "--loss", "lv", "--dry-run")
    assert r.exit_code == 0 and "medium changes iters = 200" in r.output
    assert json.loads(r.output[r.output.index("{") :])["iters"] == 200
    with pytest.raises(DifflossError, match="not one of paper, medium"):
        preset_options("small", "seeds", "cmcd", "lv")
