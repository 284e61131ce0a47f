"""The pure parts of experiments/schedule.py: the verdict rule, the run lock shared by concurrent copies,
the kept notes block, the gap curves over seeds, and the optimal density's table read back from a checkpoint."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from diffloss.io import NOTES_BEGIN, NOTES_END, keep_notes

_DIR = Path(__file__).resolve().parent.parent / "experiments"
sys.path.insert(0, str(_DIR))
_spec = importlib.util.spec_from_file_location("schedule_experiment", _DIR / "schedule.py")
sx = importlib.util.module_from_spec(_spec)
sys.modules["schedule_experiment"] = sx
_spec.loader.exec_module(sx)


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


def test_lock_is_exclusive_while_its_process_lives_and_taken_over_when_it_died(tmp_path):
    assert sx.hold(tmp_path / "run")
    assert not sx.hold(tmp_path / "run")  # held by this (live) process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "run" / ".lock").write_text(dead.stdout.strip())
    assert sx.hold(tmp_path / "run")
    assert (tmp_path / "run" / ".lock").read_text() == str(os.getpid())


def test_report_rewrite_keeps_the_hand_written_notes(tmp_path):
    report = tmp_path / "r.md"
    assert keep_notes(report) == f"{NOTES_BEGIN}\n{NOTES_END}"
    block = f"{NOTES_BEGIN}\nsome *notes*\nover lines\n{NOTES_END}"
    report.write_text(f"# old tables\n\n{block}\n\nfooter\n")
    assert keep_notes(report) == block


def test_gap_curves_average_over_seeds_with_sample_std():
    runs = [{"gap": [{"sigma": 0.1, "gap_x0": g}, {"sigma": 1.0, "gap_x0": 2 * g}]} for g in (1.0, 2.0, 6.0)]
    runs.append({"gap": None})  # a seed not diagnosed yet is skipped
    s, m, sd = sx.gap_curves(runs, "gap_x0")
    assert s.tolist() == [0.1, 1.0] and m.tolist() == [3.0, 6.0]
    np.testing.assert_allclose(sd, [np.std([1, 2, 6], ddof=1), np.std([2, 4, 12], ddof=1)])


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
