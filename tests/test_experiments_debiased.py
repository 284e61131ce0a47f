"""The pure parts of experiments/debiased_weighting.py: the run grid, the evaluation points, mean ± std over
seeds (diffloss.runs), and the skip / resume logic (with a fake evaluator, on a 2-step digits run)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from diffloss.checkpoint import load_checkpoint
from experiments import debiased_weighting as dw


def test_grid_is_every_variant_times_every_seed_with_unique_names():
    preset = dw.PRESETS["digits"]
    grid = dw.run_grid(preset)
    assert len(grid) == 8 * 3
    assert len({s.name for s in grid}) == len(grid)
    assert [s.name for s in grid[:2]] == ["eps-constant-s0", "eps-debiased-s0"]
    assert [s.name for s in grid[8:10]] == ["eps-constant-s1", "eps-debiased-s1"]


def test_variants_cover_the_issue():
    """eps on VP with the four weightings, and v / flow with the debiased weight (and their constant baselines)."""
    by_name = {v.name: v for v in dw.VARIANTS}
    eps = {v.weighting.split(":")[0] for v in dw.VARIANTS if v.target == "eps" and v.process == "vp"}
    assert eps == {"constant", "debiased", "min-snr", "p2"}
    assert by_name["v-debiased"].target == "v" and by_name["flow-debiased"].process == "flow"
    for p in dw.PRESETS.values():
        assert len(p.seeds) >= 2 and list(p.train_steps) == sorted(set(p.train_steps))
    assert all(len(p.seeds) >= 3 for name, p in dw.PRESETS.items() if not name.startswith("smoke"))


def test_eval_points_probe_every_step_and_the_grid_once_at_the_end():
    p = replace(dw.PRESETS["smoke"], train_steps=(5, 10), probe=("ddim", 4), grid=(("ddim", 2), ("ddim", 4)))
    assert dw.eval_points(p) == [(5, "ddim", 4), (10, "ddim", 4), (10, "ddim", 2)]


def test_aggregate_groups_over_seeds_only():
    rows = [
        {"variant": "a", "seed": s, "step": 10, "sampler": "ddim", "nsteps": 4, "fid": f} for s, f in enumerate((1, 3))
    ]
    rows.append({"variant": "a", "seed": 0, "step": 20, "sampler": "ddim", "nsteps": 4, "fid": 7.0})
    agg = dw.aggregate(rows)
    assert agg[("a", 10, "ddim", 4)] == (2.0, pytest.approx(math.sqrt(2)), 2)
    assert agg[("a", 20, "ddim", 4)][0] == 7.0 and agg[("a", 20, "ddim", 4)][2] == 1
    rows.append({"variant": "a", "seed": 1, "step": 20, "sampler": "ddim", "nsteps": 4, "fid": None})  # diverged
    assert dw.aggregate(rows)[("a", 20, "ddim", 4)][::2] == (7.0, 1)  # left out, not a crash or a NaN mean


class FakeEvaluator:
    """Records the checkpoint step of each call; its 'FID' is that step, so the file contents are checkable."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, int]] = []
        self.options: dict[str, dict] = {}  # sampler -> the sample_model keywords it was given

    def __call__(self, ckpt, n, sampler, steps, **sampling):
        step = load_checkpoint(ckpt)[1]["step"]
        self.calls.append((step, sampler, steps))
        self.options[sampler] = sampling
        return {"fid": float(step), "kid": 0.0, "kid_std": 0.0}


def test_ddpm_preset_samples_ancestrally_with_clip_denoised_and_ddim_without(tmp_path):
    preset = replace(dw.PRESETS["smoke14"], train_steps=(2,), batch=4, probe=("ddim", 2), grid=(("ddpm", 2),))
    fake = FakeEvaluator()
    dw.run_one(preset, dw.RunSpec(preset.variants[0], 0), tmp_path / "run", fake, lambda msg: None)
    assert fake.options["ddpm"] == {"clip": 1.0} == dict(preset.sampling["ddpm"])
    assert "clip" not in fake.options["ddim"]


def test_run_one_trains_in_stages_skips_finished_work_and_matches_one_uninterrupted_run(tmp_path):
    preset = replace(dw.PRESETS["smoke"], train_steps=(2, 4), batch=8, probe=("ddim", 2), grid=(("heun", 2),))
    spec = dw.RunSpec(dw.VARIANTS[1], 0)
    run_dir = tmp_path / "runs" / spec.name
    fake = FakeEvaluator()
    dw.run_one(preset, spec, run_dir, fake, lambda msg: None)
    assert fake.calls == [(2, "ddim", 2), (4, "ddim", 2), (4, "heun", 2)]
    assert dw.missing_evals(run_dir, preset) == []
    rows = dw.collect(tmp_path, preset)
    assert [(r["step"], r["sampler"], r["fid"]) for r in rows] == [(2, "ddim", 2.0), (4, "ddim", 4.0), (4, "heun", 4.0)]

    again = FakeEvaluator()
    dw.run_one(preset, spec, run_dir, again, lambda msg: None)
    assert again.calls == []  # everything finished: nothing trained or evaluated

    dw.eval_path(run_dir, 2, "ddim", 2).unlink()
    redo = FakeEvaluator()
    dw.run_one(preset, spec, run_dir, redo, lambda msg: None)
    assert redo.calls == [(2, "ddim", 2)]  # from the kept step-2 checkpoint, though training went on to 4

    from diffloss.train import train

    train(dw.train_config(preset, spec, 4), tmp_path / "straight")
    staged, _ = load_checkpoint(run_dir / "ckpt-4.safetensors")
    straight, _ = load_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")
    assert staged.keys() == straight.keys()
    assert all(torch.equal(staged[k], straight[k]) for k in straight)


def test_expected_runtime_counts_updates_and_network_evaluations():
    """heun with k steps makes 2k - 1 network calls (Euler on the last step), ddim k; by hand: 10 updates at
    0.5 s and 4 + 4 + 5 = 13 calls at 2 s per run, 3 runs -> 3 * (5 + 26) s."""
    assert [dw.nfe("ddim", 7), dw.nfe("heun", 7), dw.nfe("dpm2", 1)] == [7, 13, 1]
    p = replace(dw.PRESETS["smoke"], train_steps=(5, 10), probe=("ddim", 4), grid=(("ddim", 4), ("heun", 3)))
    assert dw.expected_seconds(p, 3, 0.5, 2.0) == pytest.approx(3 * (10 * 0.5 + 13 * 2.0))


def test_compare_counts_a_difference_only_beyond_the_larger_seed_std():
    assert dw.compare((10.0, 1.0, 3), (8.0, 1.5, 3)) == (pytest.approx(-20.0), "debiased better")
    assert dw.compare((10.0, 1.0, 3), (12.5, 2.0, 3)) == (pytest.approx(25.0), "debiased worse")
    assert dw.compare((10.0, 1.0, 3), (9.0, 1.5, 3))[1] == "no difference beyond the seed spread"
    assert dw.compare((10.0, math.nan, 1), (5.0, 0.1, 3))[1].startswith("undecided")


@pytest.mark.parametrize(
    ("variant", "closed_form"),
    [
        ("eps-debiased", lambda snr, t: snr**-0.5),
        ("v-debiased", lambda snr, t: snr**0.5 / (snr + 1)),
        ("flow-debiased", lambda snr, t: t * (1 - t)),
        ("eps-constant", lambda snr, t: torch.ones_like(snr)),
        ("eps-min-snr-5", lambda snr, t: snr.clamp(max=5) / snr),
        ("eps-p2", lambda snr, t: 1 / (1 + snr)),
    ],
)
def test_each_run_trains_with_the_published_weight_converted_to_its_target(variant, closed_form):
    from diffloss.process import process_from_dict
    from diffloss.weighting import weighting_from_dict

    spec = dw.RunSpec(next(v for v in dw.VARIANTS if v.name == variant), 0)
    cfg = dw.train_config(dw.PRESETS["smoke"], spec, 10)
    process = process_from_dict(cfg.process)
    t = torch.tensor([0.1, 0.4, 0.8], dtype=torch.float64)
    lam = process.logsnr(t)
    got = weighting_from_dict(cfg.weighting).weight(lam, process, cfg.target)
    torch.testing.assert_close(got, closed_form(lam.exp(), t))


@pytest.mark.parametrize(("preset", "ema"), [("mnist14", 0.999), ("gpu", 0.9999), ("smoke14", 0.999)])
def test_ddpm_presets_train_and_sample_in_the_ddpm_setting(preset, ema):
    """Each run of a DDPM preset: DDPM's chain (alpha_bar = cumprod(1 - linspace(1e-4, 0.02, 1000)), computed
    here by hand), steps n ~ U{0..999}, eps target, no gradient clip, the stated EMA; constant is 1 and debiased
    1/sqrt(SNR_n) on eps at those steps; ancestral sampling with clip_denoised (x0 clamped to [-1, 1])."""
    import numpy as np

    from diffloss.density import density_from_dict
    from diffloss.process import process_from_dict
    from diffloss.weighting import weighting_from_dict

    p = dw.PRESETS[preset]
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    snr = torch.from_numpy(alpha_bar / (1 - alpha_bar))
    assert {v.weighting for v in p.variants} == {"constant:on=eps", "debiased"}
    for spec in dw.run_grid(p):
        cfg = dw.train_config(p, spec, 10)
        assert (cfg.target, cfg.grad_clip, cfg.ema_decay) == ("eps", 0.0, ema)
        process = process_from_dict(cfg.process)
        torch.testing.assert_close(process.alphas_cumprod(), torch.from_numpy(alpha_bar))
        levels = density_from_dict(cfg.density).sample(4000, torch.Generator().manual_seed(0), process)
        n = levels.timestep
        assert n.dtype == torch.int64 and 0 <= n.min() < 20 and 980 < n.max() <= 999
        torch.testing.assert_close(levels.logsnr, snr[n].log())
        got = weighting_from_dict(cfg.weighting).weight(levels.logsnr, process, cfg.target)
        expected = snr[n] ** -0.5 if spec.variant.weighting == "debiased" else torch.ones_like(got)
        torch.testing.assert_close(got, expected)
    assert p.sampling["ddpm"] == {"clip": 1.0} and {s for s, _ in dw.points(p)} == {"ddpm", "ddim"}
    assert len(dw.points(p)) == 3


def _fake_results(root, preset, fids):
    """Evaluation files for the runs (variant, seed) of ``fids`` (-> FID), at every evaluation point."""
    from diffloss.io import write_json_atomic

    by_name = {v.name: v for v in preset.variants}
    for (variant, seed), fid in fids.items():
        spec = dw.RunSpec(by_name[variant], seed)
        for step, sampler, k in dw.eval_points(preset):
            record = {"variant": variant, "seed": seed, "step": step, "sampler": sampler, "nsteps": k, "fid": fid}
            write_json_atomic(dw.eval_path(root / "runs" / spec.name, step, sampler, k), record)


@pytest.mark.parametrize(
    ("debiased", "word", "change"), [((20, 21, 22), "does not hold", "+91%"), ((5, 6, 7), "holds", "-45%")]
)
def test_report_marks_a_partial_run_and_decides_the_claim_only_when_complete(tmp_path, debiased, word, change):
    """Constant FIDs 10, 11, 12 (11 ± 1) against debiased 21 ± 1 (+91%) or 6 ± 1 (-45%): a verdict only once
    all 3 seeds x 2 variants are there; before, PARTIAL and inconclusive."""
    p = replace(dw.PRESETS["smoke14"], seeds=(0, 1, 2), train_steps=(2,), probe=("ddim", 2), grid=(("ddpm", 3),))
    report = tmp_path / "report.md"
    _fake_results(tmp_path, p, {("eps-constant", 0): 10.0, ("eps-debiased", 0): debiased[0]})
    dw.write_report(tmp_path, p, "CMD", report)
    text = report.read_text()
    assert "**PARTIAL: 2 of 6 runs finished" in text
    assert 'on eps": inconclusive at this budget (the run is partial)**' in text

    _fake_results(tmp_path, p, {("eps-constant", s): 10.0 + s for s in (1, 2)})
    _fake_results(tmp_path, p, {("eps-debiased", s): float(debiased[s]) for s in (1, 2)})
    dw.write_report(tmp_path, p, "CMD", report)
    text = report.read_text()
    assert "PARTIAL" not in text and f'on eps": {word} at this budget**' in text
    assert f"| eps | ddpm (clip=1.0) | 3 | 11 ± 1 (n=3) | {debiased[1]:g} ± 1 (n=3) | {change} |" in text


def test_cpu_minutes_sum_the_timing_lines_per_arm(tmp_path):
    """eps-constant-s0 resumed once (60 + 30 CPU s) and s1 (90 s): 3 CPU minutes over 2 runs; eps-debiased-s0 (120 s):
    2 minutes; lines of runs outside the preset are left out."""
    lines = [("eps-constant-s0", 60), ("eps-constant-s0", 30), ("eps-constant-s1", 90), ("eps-debiased-s0", 120)]
    lines.append(("v-constant-s0", 600))
    text = "".join(f'{{"cell": "{c}", "wall_s": {2 * s}, "cpu_s": {s}}}\n' for c, s in lines)
    (tmp_path / "timing.jsonl").write_text(text)
    spent = dw.cpu_minutes(tmp_path, dw.PRESETS["mnist14"])
    assert spent == {"eps-constant": (3.0, 6.0, 2), "eps-debiased": (2.0, 4.0, 1)}
