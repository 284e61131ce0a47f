"""The optimal-loss-based weighting and density: weight formula, tracked gap, checkpointed state, CLI, bad input."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from click.testing import CliRunner

from conftest import small_train_config
from diffloss.checkpoint import load_checkpoint
from diffloss.cli import cli
from diffloss.data import load_dataset
from diffloss.density import density_from_dict, get_density
from diffloss.errors import DifflossError
from diffloss.process import get_process
from diffloss.train import CHECKPOINT_FILE, TrainConfig, train
from diffloss.weighting import get_weighting

TABLE = {"jstar_logsnr": [-4.0, 0.0, 4.0], "jstar": [0.5, 0.2, 0.0]}
VP = get_process("vp-cosine")


def test_weight_matches_hand_computed_values():
    w = get_weighting(
        "optimal", a=2, w_max=50, bump_center=0.1, bump_width=0.5, bump_height=10, sigma_star=0.3, **TABLE
    )
    lam = torch.tensor([-6.0, -2.0, 2.0, 4.0])
    # lambda=-6: beyond the table, J* = 0.5 -> 2 * 2; s = e^3 > s*: no bump.
    # lambda=-2: J* = (0.5 + 0.2) / 2 = 0.35 -> 2 / 0.35.   lambda=2: J* = 0.1 -> 2 * 10; s = e^-1 = 0.368 > 0.3.
    # lambda=4: J* = 0 -> 2 * w_max = 100, plus the bump at s = e^-2 < 0.3: 10 * exp(-(-2 - ln 0.1)^2 / (2 * 0.25)).
    bump = 10 * math.exp(-((-2 - math.log(0.1)) ** 2) / 0.5)
    expected = torch.tensor([4.0, 2 / 0.35, 20.0, 100 + bump], dtype=torch.float64)
    torch.testing.assert_close(w.x0_weight(lam, VP), expected, rtol=1e-12, atol=0)
    # on eps the same weight is divided by MSE_eps / MSE_x0 = SNR
    torch.testing.assert_close(w.weight(lam, VP, "eps"), expected / lam.double().exp(), rtol=1e-12, atol=0)


def fixed_density(jtheta, seen=(True, True, True, True), **kw):
    d = get_density("optimal", a=1, w_max=50, bump_height=0, buckets=4, **TABLE, **kw)
    d.load_state({"jtheta": torch.tensor(jtheta, dtype=torch.float64), "seen": torch.tensor(seen)})
    return d


def test_samples_follow_weighted_gap():
    # cells [-4,-2], [-2,0], [0,2], [2,4]; J* at their midpoints 0.425, 0.275, 0.15, 0.05; w = 1/J* (< w_max)
    d = fixed_density([0.525, 0.475, 0.15, 0.3], explore=0.1)
    g = [0.1 / 0.425, 0.2 / 0.275, 0.0, 0.25 / 0.05]
    mass = [0.9 * v / sum(g) + 0.1 / 4 for v in g]
    n = 200_000
    lam = d.sample(n, torch.Generator().manual_seed(0), VP).logsnr
    counts = torch.histc(lam, bins=4, min=-4, max=4).tolist()
    for c, p in zip(counts, mass):
        assert abs(c / n - p) < 5 * math.sqrt(p * (1 - p) / n)
    # log_prob is the cell mass per unit lambda (cells are 2 wide), -inf outside
    got = d.log_prob(torch.tensor([-3.0, -1.0, 1.0, 3.0, 5.0]), VP).exp().tolist()
    assert got[:4] == pytest.approx([p / 2 for p in mass], rel=1e-12) and got[4] == 0


def test_observe_tracks_an_ema_per_bucket_and_unseen_buckets_get_the_largest_gap():
    d = get_density("optimal", a=1, w_max=50, bump_height=0, buckets=4, ema_rate=0.5, explore=0.2, **TABLE)
    assert d.cell_mass(VP).tolist() == pytest.approx([0.25] * 4)  # nothing seen yet: uniform
    d.observe(torch.tensor([-3.5, -2.5, 3.0]), torch.tensor([0.6, 0.4, 0.3], dtype=torch.float64), VP)
    d.observe(
        torch.tensor([-3.0, 5.0]), torch.tensor([0.8, 9.0], dtype=torch.float64), VP
    )  # 5.0 is outside the cells: ignored
    state = d.state()
    assert state["seen"].tolist() == [True, False, False, True]
    assert state["jtheta"].tolist() == pytest.approx([0.5 + 0.5 * (0.8 - 0.5), 0, 0, 0.3])
    g0, g3 = (0.65 - 0.425) / 0.425, (0.3 - 0.05) / 0.05  # unseen cells take max(g) = g3
    g = [g0, g3, g3, g3]
    assert d.cell_mass(VP).tolist() == pytest.approx([0.8 * v / sum(g) + 0.05 for v in g], rel=1e-12)


def test_the_tracker_is_state_not_a_parameter():
    """The config round-trips without the tracked J_theta; a copy made from the config starts from no observation."""
    d = fixed_density([0.525, 0.475, 0.15, 0.3])
    assert "tracker" not in d.to_dict() and density_from_dict(d.to_dict()) == d
    fresh = density_from_dict(d.to_dict())
    assert not fresh.tracker.seen.any() and d.tracker.seen.all()
    assert fresh.tracker is not d.tracker and dataclasses.replace(d).tracker.jtheta.sum() == 0
    with pytest.raises(DifflossError, match="no parameter"):
        get_density("optimal", tracker=None, **TABLE)


@pytest.mark.parametrize(
    "kind, params",
    [
        ("weighting", {"a": 0}),
        ("weighting", {"w_max": -1}),
        ("weighting", {"bump_width": 0}),
        ("weighting", {"sigma_star": 0}),
        ("weighting", {"bump_height": -1}),
        ("density", {"ema_rate": 0}),
        ("density", {"explore": 1.5}),
        ("density", {"buckets": 0}),
    ],
)
def test_non_positive_parameters_are_refused(kind, params):
    make = get_weighting if kind == "weighting" else get_density
    with pytest.raises(DifflossError):
        make("optimal", **TABLE, **params)


def test_missing_or_bad_table_is_refused():
    with pytest.raises(DifflossError, match="J\\* table"):
        get_weighting("optimal")
    with pytest.raises(DifflossError):
        get_density("optimal", jstar_logsnr=[1.0, 0.0], jstar=[0.1, 0.2])
    with pytest.raises(DifflossError):
        get_density("optimal", jstar_logsnr=[0.0, 1.0], jstar=[-0.1, 0.2])
    with pytest.raises(DifflossError):
        fixed_density([0.1, 0.1, 0.1]).load_state({})


MOONS_TABLE = {"jstar_logsnr": [-6.0, 0.0, 6.0], "jstar": [0.4, 0.05, 0.001]}


def optimal_config(**kw) -> TrainConfig:
    """``small_train_config`` with the optimal weighting and density (the moons J* table)."""
    optimal = {
        "weighting": {"name": "optimal", **MOONS_TABLE},
        "density": {"name": "optimal", "buckets": 8, **MOONS_TABLE},
    }
    return small_train_config(**{**optimal, **kw})


def test_density_state_is_checkpointed_and_resume_is_bit_exact(tmp_path):
    run = train(optimal_config(), tmp_path / "full")
    full = load_checkpoint(tmp_path / "full" / CHECKPOINT_FILE)[0]
    assert torch.equal(full["density/jtheta"], run.objective["density"].state()["jtheta"])
    assert full["density/seen"].any() and (full["density/jtheta"] > 0).any()
    train(optimal_config(steps=3), tmp_path / "split")
    train(optimal_config(steps=6), tmp_path / "split", resume=True)
    split = load_checkpoint(tmp_path / "split" / CHECKPOINT_FILE)[0]
    assert full.keys() == split.keys()
    for k in full:
        assert torch.equal(full[k], split[k]), k


def report_file(path, fingerprint: str) -> str:
    levels = [{"logsnr": lam, "x0_mse": j} for lam, j in zip(MOONS_TABLE["jstar_logsnr"], MOONS_TABLE["jstar"])]
    path.write_text(json.dumps({"levels": levels[::-1], "data": {"fingerprint": fingerprint}}))
    return str(path)


MLP = ["--data", "moons", "--process", "flow", "--target", "flow", "--backbone", "mlp", "--width", "16", "--quiet"]


def test_cli_trains_with_a_table_from_file(tmp_path):
    table = report_file(tmp_path / "j.json", load_dataset("moons").fingerprint)
    out = tmp_path / "run"
    args = ["train", *MLP, "--weighting", "optimal", "--density", "optimal:buckets=4", "--optimal-loss", table]
    result = CliRunner().invoke(cli, [*args, "--steps", "4", "--batch", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["weighting"]["jstar_logsnr"] == MOONS_TABLE["jstar_logsnr"] == cfg["density"]["jstar_logsnr"]
    assert cfg["weighting"]["jstar"] == MOONS_TABLE["jstar"] and cfg["density"]["buckets"] == 4


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--weighting", "optimal", "--optimal-loss", "MISSING"], "no such file"),
        (["--weighting", "optimal", "--optimal-loss", "OTHER"], "other data"),
        (["--weighting", "optimal", "--optimal-loss", "GARBAGE"], "not a `diffloss optimal-loss --json` report"),
        (["--weighting", "optimal:a=0", "--optimal-loss", "GOOD"], "a > 0"),
        (["--density", "optimal:ema_rate=-1", "--optimal-loss", "GOOD"], "ema_rate"),
    ],
)
def test_bad_input_one_line_nothing_written(tmp_path, extra, needle):
    files = {
        "MISSING": str(tmp_path / "missing.json"),
        "OTHER": report_file(tmp_path / "other.json", "0" * 64),
        "GOOD": report_file(tmp_path / "good.json", load_dataset("moons").fingerprint),
        "GARBAGE": str(tmp_path / "garbage.json"),
    }
    (tmp_path / "garbage.json").write_text('{"levels": 3}')
    out = tmp_path / "run"
    extra = [files.get(v, v) for v in extra]
    result = CliRunner().invoke(cli, ["train", *MLP, *extra, "--steps", "2", "--batch", "8", "--out", str(out)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0]
    assert not out.exists()
