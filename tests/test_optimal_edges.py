"""Edge cases of the optimal loss: one row, levels beyond a process's range, the rare-event regime."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import integrate, stats

from diffloss.cli import cli
from diffloss.optimal import optimal_loss


def run(tmp_path, *args):
    out = tmp_path / "o.json"
    r = CliRunner().invoke(cli, ["optimal-loss", *args, "--json", str(out), "--no-cache"])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text()), r.output


def test_one_row_has_zero_optimal_loss_everywhere(tmp_path):
    np.save(tmp_path / "one.npy", np.array([[1.0, 2.0, 3.0, 4.0]]))
    doc, _ = run(tmp_path, "--data", str(tmp_path / "one.npy"), "--sigmas", "0.01,1,100")
    assert [lv["x0_mse"] for lv in doc["levels"]] == [0.0, 0.0, 0.0]
    assert all(lv["stderr"] == 0 and lv["upper95"] is None for lv in doc["levels"])


def test_identical_rows_and_single_row_classes():
    x = np.repeat([[0.5, -1.0]], 5, axis=0)
    assert optimal_loss(x, [0.1, 10.0], queries=64, cache=False).x0_mse.tolist() == [0.0, 0.0]
    y = np.array([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    r = optimal_loss(y, [1.0], labels=np.array([0, 1, 1]), conditional=True, queries=256, cache=False)
    assert r.per_class[0].tolist() == [0.0] and r.per_class[1][0] > 0


def test_levels_beyond_the_process_range_are_accepted(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 3))
    np.save(tmp_path / "x.npy", x)
    data = str(tmp_path / "x.npy")
    doc, text = run(tmp_path, "--data", data, "--sigmas", "1e4", "--process", "ve", "--queries", "512")
    (lv,) = doc["levels"]
    assert lv["t"] is None and " - " in text  # VE reaches s <= 80 only: no process time
    var = x.var(0).mean()
    assert abs(lv["x0_mse"] - var * (1 - 1 / 300)) < 5 * lv["stderr"] + 1e-3 * var  # J* -> (N-1)/N * var
    doc, _ = run(tmp_path, "--data", str(tmp_path / "x.npy"), "--logsnr", "-30,0", "--process", "vp")
    assert doc["levels"][0]["t"] is None and 0 < doc["levels"][1]["t"] < 1  # VP reaches lambda >= -10.3 only


def _two_point_jstar(d: float, s: float) -> float:
    """J* per dimension of {0, d} in 1-D: d^2 E[w^2], w the posterior weight of the other point."""

    def integrand(e):
        logit = -(d * d) / (2 * s * s) - d * e / s
        return stats.norm.pdf(e) * (1 / (1 + math.exp(-logit))) ** 2

    return d * d * integrate.quad(integrand, -40, 40, points=[-d / (2 * s)], limit=200)[0]


def test_rare_event_regime_reports_an_upper_bound_that_holds():
    x = np.array([[0.0], [1.0]])
    s = [0.1, 0.5]
    r = optimal_loss(x, s, queries=2048, cache=False)
    truth = [_two_point_jstar(1.0, v) for v in s]
    assert r.x0_mse[0] == 0 and r.stderr[0] == 0  # no query sees the other point at s = 0.1
    assert truth[0] > 0 and r.upper95[0] >= truth[0]
    assert math.isnan(r.upper95[1]) and abs(r.x0_mse[1] - truth[1]) < 5 * r.stderr[1]
    # the smaller of the rule of three (ln(40) / Q times the squared diameter bound (2R)^2 / D, R = 0.5) and the
    # nearest larger level's estimate + 1.96 stderr (J* is non-decreasing in s)
    rule = math.log(40) / 2048
    assert r.upper95[0] == pytest.approx(min(rule, r.x0_mse[1] + 1.96 * r.stderr[1]), rel=1e-3)


def test_monotone_bound_uses_the_nearest_larger_level_with_a_nonzero_estimate():
    from diffloss.optimal.exact import monotone_bound

    s = np.array([0.1, 0.2, 0.4, 0.8])
    j = np.array([0.0, 0.0, 1e-4, 1e-2])
    se = np.array([0.0, 0.0, 2e-5, 1e-3])
    rule = np.array([5e-3, 1e-5, np.nan, np.nan])
    out = monotone_bound(s, j, se, rule)
    assert out[0] == pytest.approx(1e-4 + 1.96 * 2e-5) and out[1] == 1e-5  # the tighter of the two bounds
    assert np.isnan(out[2:]).all()
