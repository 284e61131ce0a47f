"""Power-law fits (diffloss.scaling) against synthetic laws and numpy / scipy references; the experiment's
(experiments/scaling_law.py) extrapolation to the largest size, which must not see that size's points; and its J
and J*, which must be the training objective's totals: against a closed-form integral over EDM's level density
and weight, and for the exact posterior mean against objective_floor's J* of the data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from diffloss.data import Dataset
from diffloss.errors import DifflossError
from diffloss.loader import DiffusionModel
from diffloss.objective import build_objective
from diffloss.optimal import data_jstar, objective_floor
from diffloss.process import get_process
from diffloss.scaling import extrapolate, frontier, log_log_fit, offset_fit
from diffloss.target import get_target
from experiments import scaling_law as sl
from test_diagnose import bayes_model

F = np.geomspace(1e11, 1e15, 12)


def test_log_log_fit_recovers_an_exact_power_law():
    fit = log_log_fit(F, 3e4 * F**-0.3)
    assert fit.beta == pytest.approx(3e4, rel=1e-9)
    assert fit.alpha == pytest.approx(-0.3, rel=1e-12)
    assert fit.c == 0
    assert fit.rho == pytest.approx(-1, abs=1e-12)
    assert fit.r2 == pytest.approx(1, abs=1e-12)
    assert fit.n == len(F)


def test_log_log_fit_matches_scipy_linregress_and_pearsonr_on_noisy_data():
    rng = np.random.default_rng(0)
    j = 50 * F**-0.2 * np.exp(rng.normal(0, 0.1, len(F)))
    fit = log_log_fit(F, j)
    ref = stats.linregress(np.log(F), np.log(j))
    assert fit.alpha == pytest.approx(ref.slope, rel=1e-10)
    assert np.log(fit.beta) == pytest.approx(ref.intercept, rel=1e-10)
    assert fit.rho == pytest.approx(stats.pearsonr(np.log(F), np.log(j))[0], rel=1e-10)
    assert fit.r2 == pytest.approx(ref.rvalue**2, rel=1e-10)


def test_offset_fit_recovers_beta_alpha_and_c_of_an_exact_law():
    fit = offset_fit(F, 2e3 * F**-0.25 + 0.05)
    assert fit.beta == pytest.approx(2e3, rel=1e-5)
    assert fit.alpha == pytest.approx(-0.25, rel=1e-6)
    assert fit.c == pytest.approx(0.05, rel=1e-6)
    assert fit.r2 == pytest.approx(1, abs=1e-10)
    assert fit.rho == pytest.approx(-1, abs=1e-8)  # log(J - c) is exactly linear in log F


def test_offset_fit_within_noise_and_its_r2_and_rho_match_direct_formulas():
    rng = np.random.default_rng(1)
    j = (2e3 * F**-0.25 + 0.05) * np.exp(rng.normal(0, 0.005, len(F)))
    fit = offset_fit(F, j)
    assert fit.alpha == pytest.approx(-0.25, abs=0.03)
    assert fit.c == pytest.approx(0.05, abs=0.01)
    pred = np.log(extrapolate(fit, F))
    y = np.log(j)
    assert fit.r2 == pytest.approx(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2), rel=1e-10)
    assert fit.rho == pytest.approx(stats.pearsonr(np.log(F), np.log(j - fit.c))[0], rel=1e-10)


def test_offset_fit_of_a_pure_power_law_finds_c_near_zero():
    j = 7.0 * F**-0.1
    fit = offset_fit(F, j)
    assert fit.c == pytest.approx(0, abs=1e-4 * j.min())  # c is weakly identified near 0: optimizer tolerance
    assert fit.alpha == pytest.approx(-0.1, rel=1e-3)


def test_extrapolate_is_the_law():
    fit = log_log_fit(F, 3e4 * F**-0.3)
    assert extrapolate(fit, 1e16) == pytest.approx(3e4 * 1e16**-0.3, rel=1e-9)


def test_frontier_matches_brute_force():
    rng = np.random.default_rng(2)
    f = rng.choice([1.0, 2.0, 3.0, 5.0, 8.0, 13.0], 40)
    j = rng.uniform(0, 1, 40)
    got = frontier(f, j)
    want = [i for i in range(40) if not any((f[k] <= f[i] and j[k] < j[i]) for k in range(40))]
    assert sorted(got.tolist()) == sorted(want)
    assert np.all(np.diff(f[got]) > 0) and np.all(np.diff(j[got]) < 0)


def test_fits_refuse_bad_input():
    with pytest.raises(DifflossError, match="at least 3"):
        log_log_fit(F[:2], F[:2])
    with pytest.raises(DifflossError, match="> 0"):
        log_log_fit(F, -F)
    with pytest.raises(DifflossError, match="same compute"):
        offset_fit(np.ones(4), np.arange(1.0, 5.0))


def _series(bad_largest: float) -> sl.Series:
    """Four sizes on J = 10 F^-0.2 (+ J* = 0.1 on the raw loss), and a largest size whose points are off the
    law by the factor ``bad_largest``; 3 checkpoints per size."""
    size, f = [], []
    for k, c in enumerate((8, 16, 24, 32, 48)):
        for step in (1, 2, 4):
            size.append(c)
            f.append(1e12 * 2**k * step)
    size, f = np.array(size), np.array(f)
    gap = 10 * f**-0.2 * np.where(size == 48, bad_largest, 1.0)
    return sl.Series("test", size, f, gap + 0.1, np.full(len(f), 0.1), gap)


@pytest.mark.parametrize("mode", ["final", "frontier"])
def test_extrapolation_leaves_the_largest_size_out(mode):
    good, bad = sl.fit_all(_series(1.0), mode), sl.fit_all(_series(3.0), mode)
    f_last = 1e12 * 2**4 * 4
    law = 10 * f_last**-0.2
    assert good["reducible"]["rel_err_reducible"] == pytest.approx(0, abs=1e-9)
    assert good["reducible"]["extrapolated_j"] == pytest.approx(law + 0.1, rel=1e-9)
    # the prediction ignores the largest size: the same as before, so the error is exactly 1/3 - 1
    assert bad["reducible"]["extrapolated_j"] == pytest.approx(law + 0.1, rel=1e-9)
    assert bad["reducible"]["rel_err_reducible"] == pytest.approx(1 / 3 - 1, rel=1e-9)
    assert bad["reducible"]["rel_err_j"] == pytest.approx((law + 0.1) / (3 * law + 0.1) - 1, rel=1e-9)


def test_extrapolation_errors_of_the_raw_and_offset_fits_on_an_exact_law():
    """J = 10 F^-0.2 + J*: the raw fit's prediction is the least-squares line through log J of the four smaller
    sizes' frontier (J depends on F alone here, so the frontier is one point per distinct F), evaluated at the
    largest size's final F; the offset fit recovers the law, so its error is ~0."""
    s = _series(1.0)
    got = sl.fit_all(s, "frontier")
    f = np.unique(s.f[s.size != 48])
    slope, icpt = np.polyfit(np.log(f), np.log(10 * f**-0.2 + 0.1), 1)
    f_last = s.f.max()
    j_last = 10 * f_last**-0.2 + 0.1
    assert got["raw"]["observed_j"] == pytest.approx(j_last, rel=1e-12)
    assert got["raw"]["extrapolated_j"] == pytest.approx(np.exp(icpt + slope * np.log(f_last)), rel=1e-9)
    assert got["raw"]["rel_err_j"] == pytest.approx(np.exp(icpt + slope * np.log(f_last)) / j_last - 1, rel=1e-9)
    assert got["raw"]["rel_err_j"] < -0.01  # the pure power law bends below the floor it cannot see
    assert got["offset"]["rel_err_j"] == pytest.approx(0, abs=1e-4)
    assert got["reducible"]["rel_err_j"] == pytest.approx(0, abs=1e-12)


def test_floor_sweep_is_straight_only_at_the_true_floor_and_paired_differences_are_per_seed():
    """On J = 10 F^-0.2 + J* (J* = 0.1) log(J - k J*) is exactly linear in log F only for k = 1; the paired
    difference of |rho| (reducible - raw) is the mean of the per-seed differences."""
    s = _series(1.0)
    sweep = sl.floor_sweep(s, "frontier")
    assert sweep[1.0] == pytest.approx(1, abs=1e-12)
    assert all(sweep[k] < 1 - 1e-6 for k in (0.0, 0.5))
    assert sweep[2.0] is None  # J - 2 J* <= 0 at the largest F: no log
    f = np.unique(s.f)
    assert sweep[0.0] == pytest.approx(abs(stats.pearsonr(np.log(f), np.log(10 * f**-0.2 + 0.1))[0]), rel=1e-12)
    per_seed = [sl.fit_all(_series(1.0), "frontier"), sl.fit_all(_series(3.0), "frontier")]
    diffs = [abs(p["reducible"]["rho"]) - abs(p["raw"]["rho"]) for p in per_seed]
    st = sl.paired(per_seed, "abs_rho")
    assert (st.mean, st.std, st.n) == (pytest.approx(np.mean(diffs)), pytest.approx(np.std(diffs, ddof=1)), 2)


def test_selection_final_is_the_last_point_of_each_size():
    s = _series(1.0)
    mask = sl.selection(s, "final")
    assert sorted(s.size[mask].tolist()) == [8, 16, 24, 32, 48]
    assert all(s.f[mask & (s.size == c)][0] == s.f[s.size == c].max() for c in (8, 16, 24, 32, 48))


def test_fit_stats_are_mean_and_sample_std_over_seeds():
    # seed A on the law, seed B with the largest size 3x off it: relative errors of J - J* are 0 and 1/3 - 1
    per_seed = [sl.fit_all(_series(1.0), "final"), sl.fit_all(_series(3.0), "final")]
    st = sl.fit_stats(per_seed)
    assert st["reducible"]["rel_err_reducible"] == (
        pytest.approx(-1 / 3, rel=1e-9),
        pytest.approx(np.sqrt(2) / 3, rel=1e-9),
        2,
    )
    rhos = [abs(f["raw"]["rho"]) for f in per_seed]
    assert st["raw"]["abs_rho"][:2] == (pytest.approx(np.mean(rhos)), pytest.approx(np.std(rhos, ddof=1)))
    assert st["raw"]["n_points"] == (5, 0, 2)


SD = 0.5  # EDM's sigma_data


@pytest.fixture(scope="module")
def edm_setting():
    """Tiny 3-D data (48 rows, not centered) and EDM's objective on it, as the experiment builds it."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 3))[rng.integers(0, 4, 48)] + 0.4 * rng.normal(size=(48, 3)) + 0.5).astype(np.float32)
    ds = Dataset(x, (3,), "toy")
    proc = get_process("edm")
    return build_objective("x0", f"edm:sigma_data={SD}", "default", proc, ds), proc, ds


def _linear_model(proc) -> DiffusionModel:
    """x0_hat = c_skip x_t with EDM's c_skip = sd^2 / (s^2 + sd^2) (alpha = 1)."""

    def net(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = proc.alpha_sigma(t.double())[1][:, None]
        return (SD**2 / (s**2 + SD**2) * x_t.double()).float()

    return DiffusionModel(net, proc, get_target("x0"), (3,))


def test_j_of_a_linear_denoiser_is_the_objective_total_by_numeric_integration(edm_setting):
    """For x0_hat = c_skip x_t: J_x0(s) = (c_skip - 1)^2 v + c_skip^2 s^2 with v = E||x0||^2 / D, so
    w J_x0 = (s^2 v / sd^2 + sd^2) / (s^2 + sd^2); its expectation over ln s ~ N(-1.2, 1.2^2) truncated to EDM's
    [0.002, 80] by scipy's quad is the total the experiment must report."""
    objective, proc, ds = edm_setting
    v = float(np.mean(ds.x.astype(np.float64) ** 2))
    lo, hi = math.log(proc.sigma_min), math.log(proc.sigma_max)
    dens = lambda y: stats.norm.pdf(y, -1.2, 1.2)  # noqa: E731
    wj = lambda y: (math.exp(2 * y) * v / SD**2 + SD**2) / (math.exp(2 * y) + SD**2)  # noqa: E731
    want = integrate.quad(lambda y: dens(y) * wj(y), lo, hi)[0] / integrate.quad(dens, lo, hi)[0]
    got = sl.evaluate(_linear_model(proc), ds.x, objective, proc, queries=16384, seed=0)
    j = got["total"]["J"]
    assert j["stderr"] < 0.01 * j["total"] and j["quadrature_error"] < 1e-3 * j["total"]
    assert abs(j["total"] - want) < 4 * j["stderr"] + 2 * j["quadrature_error"], (j, want)
    assert abs(wj(0.0) - 1) > 0.05  # v != sd^2: the weight matters (for v = sd^2, w J_x0 would be 1 everywhere)


def test_j_of_the_shifted_posterior_mean_is_the_floor_plus_its_weighted_excess(edm_setting):
    """The exact posterior mean shifted by a constant delta (unshifted, its J would equal J* at every node up to
    fp32 rounding of x_t, which the below-J* check flags; the shift keeps that check meaningful): per node
    J_x0 = J*_x0 + ||delta||^2 / D, so J - J* = ||delta||^2 / D x E_p[w_x0] (scipy's quad over the truncated
    lognormal), J = J* + (J - J*) within Monte Carlo error, and J* agrees with objective_floor on the data's own
    estimator (independent draws, nodes refined) within the Monte Carlo and quadrature errors."""
    objective, proc, ds = edm_setting
    delta = np.array([0.05, -0.1, 0.02])
    model = bayes_model(ds.x, proc, objective.target, delta)
    tot = sl.evaluate(model, ds.x, objective, proc, queries=4096, seed=0)["total"]
    lo, hi = math.log(proc.sigma_min), math.log(proc.sigma_max)
    dens = lambda y: stats.norm.pdf(y, -1.2, 1.2)  # noqa: E731
    weight = lambda y: (math.exp(2 * y) + SD**2) / (math.exp(2 * y) * SD**2)  # noqa: E731
    mean_w = integrate.quad(lambda y: dens(y) * weight(y), lo, hi)[0] / integrate.quad(dens, lo, hi)[0]
    gap = tot["gap"]
    assert gap["total"] == pytest.approx(float(np.mean(delta**2)) * mean_w, rel=1e-4, abs=2 * gap["quadrature_error"])
    j, jstar = tot["J"], tot["Jstar"]
    assert abs(j["total"] - jstar["total"] - gap["total"]) < 4 * j["stderr"]
    ref = objective_floor(objective, proc, data_jstar(ds, queries=4096, seed=1, threads=1, cache=False))
    tol = 4 * math.hypot(jstar["stderr"], ref.stderr) + jstar["quadrature_error"] + ref.quadrature_error
    assert abs(jstar["total"] - ref.total) < tol + ref.rare_event_bound, (jstar, ref)
    assert tol + ref.rare_event_bound < 0.2 * ref.total  # a check that can fail


def test_node_curve_refuses_levels_that_were_not_diagnosed():
    curve = sl.node_curve(np.array([0.1, 1.0]), [1.0, 2.0], [0.0, 0.0])
    assert curve(np.array([1.0, 0.1]))[0].tolist() == [2.0, 1.0]
    with pytest.raises(DifflossError, match="not diagnosed"):
        curve(np.array([0.5]))


def test_pipeline_writes_the_report_and_resumes_without_retraining(tmp_path, monkeypatch):
    tiny = sl.Preset("smoke", (8, 16, 24), (2, 4), 16, (0, 1), data="digits", warmup=1)
    monkeypatch.setitem(sl.PRESETS, "smoke", tiny)
    report = tmp_path / "r.md"
    root = tmp_path / "root"
    args = ["--preset", "smoke", "--root", str(root), "--report", str(report)]
    assert sl.main([*args, "--seeds", "0"]) == 0
    assert "PARTIAL" not in report.read_text(encoding="utf-8")  # the report covers the seeds asked for
    assert sl.main(args) == 0
    evals = sorted(root.rglob("eval/*.json"))
    assert len(evals) == 12
    assert sorted(p.name for p in (root / "runs").iterdir()) == [
        "c16-s0", "c16-s1", "c24-s0", "c24-s1", "c8-s0", "c8-s1"
    ]  # fmt: skip
    stamps = [p.stat().st_mtime_ns for p in evals]
    assert sl.main([*args, "--channels", "24,8"]) == 0  # everything done: nothing is trained or diagnosed again
    assert [p.stat().st_mtime_ns for p in evals] == stamps
    text = report.read_text(encoding="utf-8")
    assert "SMOKE RUN" in text and "PARTIAL" not in text
    assert "2 seeds [0, 1]" in text and " ± " in text
    front = text.split("### Compute-efficient frontier")[1].split("### Final point")[0]
    assert all(" ± " in row for row in front.splitlines() if row.startswith("| total | J = βF^α |"))
    assert report.with_suffix(".png").exists()
    saved = json.loads(report.with_suffix(".json").read_text(encoding="utf-8"))
    assert saved["seeds_fitted"] == [0, 1] and sorted(saved["fits_per_seed"]) == ["0", "1"]
    assert saved["mean_std_over_seeds"]["frontier"]["total"]["raw"]["abs_rho"]["n"] == 2
    rows = report.with_suffix(".csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 12 * (1 + 17)  # header + (total + 17 nodes) per diagnosis
    assert {r.split(",")[0] for r in rows[1:]} == {"0", "1"}
    with pytest.raises(DifflossError, match="not sizes"):
        sl.main([*args, "--channels", "12"])
