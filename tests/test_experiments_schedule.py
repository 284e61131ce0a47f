"""The pure parts of experiments/schedule.py: the verdict rule, when a run is finished, the gap curves over seeds,
and the optimal density's table read back from a checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from experiments import schedule as sx


def test_schedules_are_the_issues_five_and_presets_train_every_one_alike():
    assert sx.MAIN == ("constant", "min-snr-5", "edm", "debiased", "optimal") and set(sx.MAIN) <= set(sx.SCHEDULES)
    assert sx.SCHEDULES["optimal"] == sx.SCHEDULES["optimal-x0"] == ("optimal", "optimal")
    assert sx.TARGETS == {"optimal-x0": "x0", "constant-x0": "x0"}  # the ablations: the only x0 networks
    assert sx.SCHEDULES["constant-x0"] == sx.SCHEDULES["constant"]  # the control differs only in the network
    assert sx.PRESETS["digits"].seeds == (0, 1, 2) and sx.SAMPLING_STEPS == (10, 20, 50)


def test_compare_counts_a_difference_only_beyond_the_larger_seed_std():
    assert sx.compare((10.0, 1.0, 3), (8.0, 0.5, 3)) == (pytest.approx(-20.0), "optimal better")
    assert sx.compare((10.0, 1.0, 3), (12.0, 0.5, 3)) == (pytest.approx(20.0), "optimal worse")
    assert sx.compare((10.0, 3.0, 3), (8.0, 0.5, 3))[1] == "no difference beyond the seed spread"
    assert sx.compare((10.0, 0.1, 1), (5.0, 0.1, 3))[1].startswith("undecided")


def test_a_run_is_finished_only_with_all_its_outputs(tmp_path):
    grid = sx.grid(tmp_path, sx.PRESETS["smoke"])
    assert grid.directory(("optimal", 1)) == tmp_path / "smoke" / "optimal" / "seed1"
    for name in ["eval_10.json", "eval_20.json", "eval_50.json", "gap.json"]:
        (grid.directory(("edm", 0)) / name).parent.mkdir(parents=True, exist_ok=True)
        (grid.directory(("edm", 0)) / name).write_text("{}")
        (grid.directory(("optimal", 0)) / name).parent.mkdir(parents=True, exist_ok=True)
        (grid.directory(("optimal", 0)) / name).write_text("{}")
    assert grid.pending([("edm", 0), ("optimal", 0), ("edm", 1)]) == [("optimal", 0), ("edm", 1)]  # no density


def test_gap_curves_average_over_seeds_with_sample_std_nan_for_one_seed():
    runs = [{"gap": [{"sigma": 0.1, "gap_x0": g}, {"sigma": 1.0, "gap_x0": 2 * g}]} for g in (1.0, 2.0, 6.0)]
    runs.append({"gap": None})  # a seed not diagnosed yet is skipped
    s, m, sd = sx.gap_curves(runs, "gap_x0")
    assert s.tolist() == [0.1, 1.0] and m.tolist() == [3.0, 6.0]
    np.testing.assert_allclose(sd, [np.std([1, 2, 6], ddof=1), np.std([2, 4, 12], ddof=1)])
    s, m, sd = sx.gap_curves(runs[:1], "gap_x0")  # one seed: no spread to speak of (NaN, never 0)
    assert m.tolist() == [1.0, 2.0] and np.isnan(sd).all()


def test_density_table_reads_the_optimal_state_back_from_the_checkpoint(tmp_path):
    """A 3-step optimal run: the table's density integrates to 1 over the cells, and its J_theta, J* and weights
    are the checkpointed state and the schedule's formula at the cell midpoints."""
    from diffloss.density import density_from_dict
    from diffloss.process import get_process
    from diffloss.train import train
    from diffloss.weighting import weighting_from_dict

    preset = replace(sx.PRESETS["smoke"], steps=3, batch=8, warmup=1)
    cfg = replace(sx.train_config(preset, "optimal"), log_every=1)
    run = train(cfg, tmp_path / "run")
    table = sx.density_table(tmp_path / "run")
    lam = torch.tensor(table["logsnr"], dtype=torch.float64)
    width = (lam[1] - lam[0]).item()
    assert sum(table["density"]) * width == pytest.approx(1.0, rel=1e-9)
    assert table["jtheta_x0"] == run.objective["density"].state()["jtheta"].tolist()
    dens, w, proc = density_from_dict(cfg.density), weighting_from_dict(cfg.weighting), get_process("vp-cosine")
    assert table["jstar_x0"] == dens.optimal_loss(lam).tolist()
    np.testing.assert_allclose(table["weight_eps"], (w.x0_weight(lam, proc) / lam.exp()).numpy(), rtol=1e-12)
    json.dumps(table, allow_nan=False)
