"""The pure parts of experiments/schedule.py: the verdict rule, when a run is finished, the gap curves over seeds,
and the optimal density's table read back from a checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from experiments import schedule as sx


def test_digits_arms_are_issue_6s_five_and_the_x0_ablation_differs_only_in_the_network():
    assert sx.PRESETS["digits"].arms == ("constant", "min-snr-5", "edm", "debiased", "optimal")
    assert sx.ARMS["optimal"].baselines == ("constant", "min-snr-5", "edm", "debiased")
    a, c = sx.ARMS["optimal-x0"], sx.ARMS["constant-x0"]
    assert (a.network, c.network) == ("x0", "x0") and (c.weighting, c.density) == ("constant:on=eps", "default")
    assert sx.PRESETS["digits"].seeds == (0, 1, 2) and sx.PRESETS["digits"].sampling_steps == (10, 20, 50)


def test_paper_arms_are_each_networks_own_schedule_against_the_optimal_one():
    """EDM: lognormal levels with 1/c_out^2 on a preconditioned x0 network; FM: uniform and logit-normal t with a
    constant weight on a raw velocity network; each optimal arm compared with its network's own schedules; the
    ablations keep one half of the optimal schedule; the sweep moves one parameter off the default."""
    assert sx.NETWORKS["edm"] == ("edm", "x0", "edm") and sx.NETWORKS["fm"] == ("flow", "flow", "none")
    assert (sx.ARMS["edm-own"].weighting, sx.ARMS["edm-own"].density) == ("edm", "edm-lognormal")
    assert {sx.ARMS[a].density for a in ("fm-uniform", "fm-logit-normal")} == {"uniform-t", "logit-normal"}
    assert sx.ARMS["fm-optimal"].baselines == ("fm-uniform", "fm-logit-normal")
    assert (sx.ARMS["edm-weight-only"].weighting, sx.ARMS["edm-weight-only"].density) == ("optimal", "edm-lognormal")
    assert (sx.ARMS["edm-density-only"].weighting, sx.ARMS["edm-density-only"].density) == ("edm", "optimal")
    from diffloss.optimal_weight import OptimalWeightParams

    defaults = OptimalWeightParams.__dataclass_fields__
    assert defaults["w_max"].default == 1e4 and defaults["bump_height"].default == 1e3  # edm-optimal's values
    sweep = {a: sx.ARMS[a] for a in sx.ABLATIONS if a.startswith("edm-") and ("wmax" in a or "bump" in a)}
    assert sorted(a.weighting for a in sweep.values()) == sorted(a.density for a in sweep.values()) == [
        "optimal:bump_height=1e2", "optimal:bump_height=1e4", "optimal:w_max=1e1", "optimal:w_max=1e2",
        "optimal:w_max=1e3",
    ]  # fmt: skip
    fm = sx.ARMS["fm-wmax-1e2"]
    assert (fm.network, fm.weighting, fm.density) == ("fm", "optimal:w_max=1e2", "optimal:w_max=1e2")
    for name in ("mnist14", "gpu"):
        preset = sx.PRESETS[name]
        assert (
            preset.conditional and preset.grad_clip == 0 and len(preset.seeds) == 3 and len(preset.sampling_steps) == 3
        )
        assert set(preset.arms) == {*sx.PAPER_ARMS, *sx.ABLATIONS}


def test_paper_preset_trains_a_conditional_preconditioned_network_with_the_conditional_floor(monkeypatch):
    """edm-optimal's config: EDM's process and preconditioning, the x0 target, class-conditional with dropout 0.1,
    and the J* table of conditional training (``compute_table`` with that dropout: tested in test_conditional)."""
    import diffloss.objective

    asked = []

    def fake_table(data, process, *, label_dropout=None, progress=False):
        asked.append((data.name, process.name, label_dropout))
        return [-1.0, 0.0, 1.0], [0.3, 0.2, 0.1]

    monkeypatch.setattr(diffloss.objective, "compute_table", fake_table)
    preset = replace(sx.PRESETS["smoke-paper"], data="digits")
    cfg = sx.train_config(preset, "edm-optimal")
    assert asked == [("digits", "edm", sx.LABEL_DROPOUT)]
    assert (cfg.process["name"], cfg.target, cfg.precond) == ("edm", "x0", "edm")
    assert cfg.conditional and cfg.num_classes == 10 and cfg.label_dropout == sx.LABEL_DROPOUT
    assert cfg.weighting["jstar"] == cfg.density["jstar"] == [0.3, 0.2, 0.1]
    assert cfg.grad_clip == 0 and cfg.ema_decay == preset.ema_decay
    fm = sx.train_config(preset, "fm-uniform")  # a baseline needs no table
    assert (fm.process["name"], fm.target, fm.precond, fm.density["name"]) == ("flow", "flow", "none", "uniform-t")
    assert len(asked) == 1


def test_compare_counts_a_difference_only_beyond_the_larger_seed_std():
    assert sx.compare((10.0, 1.0, 3), (8.0, 0.5, 3)) == (pytest.approx(-20.0), "arm better")
    assert sx.compare((10.0, 1.0, 3), (12.0, 0.5, 3)) == (pytest.approx(20.0), "arm worse")
    assert sx.compare((10.0, 3.0, 3), (8.0, 0.5, 3))[1] == "no difference beyond the seed spread"
    assert sx.compare((10.0, 0.1, 1), (5.0, 0.1, 3))[1].startswith("undecided")


def test_a_run_is_finished_only_with_all_its_outputs(tmp_path):
    grid = sx.grid(tmp_path, sx.PRESETS["smoke"])  # digits arms: sampled at 10, 20 and 50 steps
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


def test_run_one_trains_samples_and_diagnoses_on_the_device_it_is_given(tmp_path, monkeypatch):
    import torch

    seen = []
    monkeypatch.setattr(sx, "train_to", lambda cfg, d, device: seen.append(("train", device)))
    monkeypatch.setattr(
        sx, "diagnose_run", lambda d, preset, device: seen.append(("diagnose", device)) or {"summary": ""}
    )

    class Evaluator:
        device = torch.device("meta")

        def __call__(self, ckpt, n, sampler, k):
            seen.append(("sample", self.device))
            return {"fid": None, "kid": None, "kid_std": None}  # a diverged model: recorded, not a crash

    preset = sx.PRESETS["smoke"]
    from conftest import small_train_config

    configs = {"edm": small_train_config()}
    sx.run_one(preset, configs, Evaluator(), ("edm", 0), tmp_path, device=torch.device("meta"))
    assert seen == [("train", torch.device("meta")), *[("sample", torch.device("meta"))] * 3,
                    ("diagnose", torch.device("meta"))]  # fmt: skip
    assert json.loads((tmp_path / "eval_10.json").read_text())["fid"] is None


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
    np.testing.assert_allclose(table["weight_target"], (w.x0_weight(lam, proc) / lam.exp()).numpy(), rtol=1e-12)
    json.dumps(table, allow_nan=False)
