"""Power-law fits (diffloss.scaling) against synthetic laws and numpy / scipy references, and the experiment's
extrapolation to the largest size (experiments/scaling_law.py), which must not see that size's points."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats

from diffloss.errors import DifflossError
from diffloss.scaling import extrapolate, frontier, log_log_fit, offset_fit
from experiments import scaling_law as sl

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


def test_seed_zero_keeps_the_single_seed_layout():
    assert sl.run_name(8, 0) == "c8" and sl.run_name(8, 2) == "c8-s2"


def test_pipeline_writes_the_report_and_resumes_without_retraining(tmp_path, monkeypatch):
    tiny = sl.Preset("smoke", (8, 16, 24), (2, 4), 16, n_levels=4, single=(0, 1, 3), warmup=1, seeds=(0, 1))
    monkeypatch.setitem(sl.PRESETS, "smoke", tiny)
    report = tmp_path / "r.md"
    root = tmp_path / "root"
    args = ["--preset", "smoke", "--root", str(root), "--report", str(report)]
    assert sl.main([*args, "--seeds", "0"]) == 0
    assert "PARTIAL" not in report.read_text(encoding="utf-8")  # the report covers the seeds asked for
    assert sl.main(args) == 0
    evals = sorted(root.rglob("eval/*.json"))
    assert len(evals) == 12
    assert sorted(p.name for p in (root / "runs").iterdir()) == ["c16", "c16-s1", "c24", "c24-s1", "c8", "c8-s1"]
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
    assert len(rows) == 1 + 12 * (1 + 4)  # header + (total + 4 levels) per diagnosis
    assert {r.split(",")[0] for r in rows[1:]} == {"0", "1"}
    with pytest.raises(DifflossError, match="not sizes"):
        sl.main([*args, "--channels", "12"])
