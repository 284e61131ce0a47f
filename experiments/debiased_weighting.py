"""The debiased-weighting experiment (Yu et al. 2024, arXiv 2310.08442): does w = 1/sqrt(SNR) on the eps-MSE
give a better FID, and good samples with fewer sampling steps, than the usual weightings?

Variants (all on the VP process with DDPM's linear betas, levels t ~ U(0, 1), the project's UNet):

- eps-prediction with ``constant`` (1 on eps, DDPM's L_simple), ``debiased`` (1/sqrt(SNR) on eps),
  ``min-snr`` (gamma = 5) and ``p2`` (k = 1, gamma = 1);
- v-prediction with ``constant`` (1 on v) and ``debiased`` converted to v: sqrt(SNR)/(SNR + 1);
- flow matching (process ``flow``, velocity target) with ``constant`` and ``debiased`` converted to the
  velocity: t(1 - t) (diffloss.weighting defines every weight once, on x0, and converts it).

Each variant x seed trains in its own directory ROOT/runs/VARIANT-sSEED (``diffloss.train``, bit-exact resume).
Training stops at every step of ``train_steps``; the checkpoint is copied to ``ckpt-STEP.safetensors`` and
evaluated: FID (and KID) in the project classifier's feature space of ``n_samples`` samples from the EMA
weights against the reference set, with the ``probe`` sampler at every step, and with every sampler x steps of
``grid`` at the last step. Each evaluation is one JSON file ROOT/runs/RUN/eval/STEP-SAMPLER-STEPS.json; a run
whose files exist is skipped, so the command resumes where it was stopped. Finally the finished evaluations
are gathered into reports/debiased_weighting[_PRESET].{md,csv} and two PNG plots (mean ± std over seeds). A hand-written
reading between the markers ``NOTES_BEGIN`` and ``NOTES_END`` of an existing report is kept.
``--report-only`` just rewrites the report; ``--measure`` times one update and one network call and writes the
expected runtime of the preset to ROOT/cost.json (quoted by the report).

Presets: ``smoke`` (seconds per run; checks the pipeline, not a result), ``digits`` (1.3 h of CPU for 24 runs
of 1200 updates) and ``mnist`` (1.9 h of CPU for 24 runs of only 400 updates: far from converged).

Run: PYTHONPATH=src python experiments/debiased_weighting.py --preset digits --root /work/exp-runs/debiased
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from diffloss import runs
from diffloss.io import atomic_write, write_json_atomic
from diffloss.metrics.evaluate import SAMPLE_SEED, CheckpointEvaluator
from diffloss.runs import Grid, Stat, cell_key, csv_text, keep_notes, log, mean_std, run_cli

REPORTS = Path(__file__).resolve().parent.parent / "reports"
NONE = mean_std(())  # a point without finished seeds
PAPER = "FID-10k 7.7 for DDPM (constant weight on eps) -> 6.0 with the debiased weight (-22%), on their image setup"


Agg = dict[tuple[str, int, str, int], Stat]
"""(variant, training step, sampler, sampling steps) -> ``Stat``."""


@dataclass(frozen=True)
class Variant:
    """One training objective: process, prediction target, weighting and level density specs (``diffloss train``
    syntax; density ``default`` is the process's usual one)."""

    name: str
    process: str
    target: str
    weighting: str
    density: str = "default"


VARIANTS: tuple[Variant, ...] = (
    Variant("eps-constant", "vp", "eps", "constant:on=eps"),
    Variant("eps-debiased", "vp", "eps", "debiased"),
    Variant("eps-min-snr-5", "vp", "eps", "min-snr:gamma=5"),
    Variant("eps-p2", "vp", "eps", "p2:k=1,gamma=1"),
    Variant("v-constant", "vp", "v", "constant:on=v"),
    Variant("v-debiased", "vp", "v", "debiased"),
    Variant("flow-constant", "flow", "flow", "constant:on=flow"),
    Variant("flow-debiased", "flow", "flow", "debiased"),
)

DDPM = "vp:discrete=true"  # DDPM's chain: T = 1000, linear betas 1e-4 -> 0.02
DDPM_VARIANTS: tuple[Variant, ...] = tuple(
    Variant(name, DDPM, "eps", weighting, "uniform-t:discrete=true")  # step n ~ U{0..T-1}, as DDPM
    for name, weighting in (("eps-constant", "constant:on=eps"), ("eps-debiased", "debiased"))
)
"""The DDPM setting of the paper's headline number: eps-prediction on the discrete chain, constant (L_simple) vs
debiased; the presets that use them also turn gradient clipping off (``Preset.grad_clip``)."""


@dataclass(frozen=True)
class Preset:
    """The size of an experiment. ``grid`` is ((sampler, steps), ...) evaluated at the last training step;
    ``probe`` is the (sampler, steps) evaluated at every step of ``train_steps``. ``sampling`` maps a sampler to
    its further ``sample_model`` keywords (e.g. ``{"ddpm": {"clip": 1.0}}``: DDPM's ``clip_denoised``).
    ``channels`` is the UNet's base width (None: the UNet preset's); ``ema_decay`` and ``grad_clip`` (0 = off) go
    to ``TrainConfig``. ``device``: where training and sampling run (``cpu`` or ``cuda``)."""

    name: str
    data: str
    ref: str
    seeds: tuple[int, ...]
    train_steps: tuple[int, ...]
    batch: int
    unet: str
    n_samples: int
    probe: tuple[str, int]
    grid: tuple[tuple[str, int], ...]
    lr: float = 2e-4
    warmup: int = 200
    variants: tuple[Variant, ...] = VARIANTS
    channels: int | None = None
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    sampling: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    device: str = "cpu"


def _grid(samplers: Sequence[str], steps: Sequence[int]) -> tuple[tuple[str, int], ...]:
    return tuple((s, k) for s in samplers for k in steps)


DDPM_SETTING: dict[str, Any] = {
    "variants": DDPM_VARIANTS,
    "grad_clip": 0.0,
    "ema_decay": 0.999,
    "sampling": {"ddpm": {"clip": 1.0}, "ddim": {"spacing": "respaced"}},
}
"""The training and sampling settings of the DDPM presets: no gradient clipping; EMA 0.999 (on a CPU budget of a
few thousand updates; DDPM's 0.9999 averages over ~10k); ancestral sampling with ``clip_denoised`` (x0 clamped to
[-1, 1]), and DDIM (eta = 0, unclipped) on the same evenly respaced timesteps of the T = 1000 chain."""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("smoke", "digits", "digits", (0, 1), (10, 20), 32, "tiny", 64, ("ddim", 4),
               _grid(("ddim", "heun"), (2, 4)), warmup=5),
        Preset("digits", "digits", "digits", (0, 1, 2), (300, 600, 1200), 64, "tiny", 500, ("ddim", 20),
               _grid(("ddim", "heun"), (5, 10, 20, 50))),
        Preset("mnist", "mnist", "mnist:test", (0, 1, 2), (100, 200, 400), 32, "tiny", 200, ("ddim", 10),
               _grid(("ddim",), (5, 10, 20)) + _grid(("heun",), (5, 10))),
        Preset("smoke14", "mnist14", "mnist14:test", (0, 1), (10, 20), 16, "tiny", 64, ("ddim", 4),
               (("ddpm", 8), ("ddim", 4), ("ddim", 2)), warmup=5, **DDPM_SETTING, channels=16),
        Preset("mnist14", "mnist14", "mnist14:test", (0, 1, 2), (600, 1200, 2400), 64, "tiny", 500, ("ddim", 20),
               (("ddpm", 100), ("ddim", 50), ("ddim", 20)), **DDPM_SETTING, channels=16),
        Preset("gpu", "mnist", "mnist:test", (0, 1, 2), (25_000, 50_000, 100_000), 128, "small", 10_000,
               ("ddim", 50), (("ddpm", 100), ("ddim", 50), ("ddim", 20)), **DDPM_SETTING | {"ema_decay": 0.9999},
               warmup=5000, device="cuda"),
    )
}  # fmt: skip
MAIN_PRESET = "mnist14"  # its report is reports/debiased_weighting.md; the others' reports/debiased_weighting_PRESET.md


@dataclass(frozen=True)
class RunSpec:
    variant: Variant
    seed: int

    @property
    def name(self) -> str:
        """The run's directory under ROOT/runs."""
        return cell_key({"variant": self.variant.name, "seed": self.seed}, "{variant}-s{seed}")


def run_grid(preset: Preset) -> list[RunSpec]:
    """Every variant x seed of the preset, seed-major (every variant of the first seed first), so that a
    partial run already compares all variants."""
    return [RunSpec(v, s) for s in preset.seeds for v in preset.variants]


def eval_points(preset: Preset) -> list[tuple[int, str, int]]:
    """(training step, sampler, sampling steps) of every evaluation of one run, in the order they are made."""
    last = preset.train_steps[-1]
    points = [(step, *preset.probe) for step in preset.train_steps]
    return points + [(last, s, k) for s, k in preset.grid if (s, k) != preset.probe]


def eval_path(run_dir: Path, step: int, sampler: str, steps: int) -> Path:
    return run_dir / "eval" / f"{step}-{sampler}-{steps}.json"


def missing_evals(run_dir: Path, preset: Preset) -> list[tuple[int, str, int]]:
    """The evaluation points of ``eval_points`` whose result file does not exist yet (what is left to do)."""
    return [p for p in eval_points(preset) if not eval_path(run_dir, *p).exists()]


def aggregate(rows: Iterable[dict[str, Any]], key: str = "fid") -> Agg:
    """``mean_std`` of ``row[key]`` over seeds, grouped by (variant, step, sampler, sampling steps)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["step"], r["sampler"], r["nsteps"]), []).append(float(r[key]))
    return {k: mean_std(v) for k, v in groups.items()}


def nfe(sampler: str, steps: int) -> int:
    """Network evaluations of one sampling run: ``steps`` for ddim / euler / ddpm, 2 steps - 1 for heun / dpm2 /
    edm (their last step to s = 0 is an Euler step)."""
    return 2 * steps - 1 if sampler in ("heun", "dpm2", "edm") else steps


def expected_seconds(preset: Preset, n_runs: int, step_seconds: float, nfe_seconds: float) -> float:
    """Runtime of ``n_runs`` runs: each trains ``train_steps[-1]`` updates and makes every evaluation of
    ``eval_points`` (``nfe_seconds`` = one network evaluation of ``n_samples`` rows)."""
    per_run = preset.train_steps[-1] * step_seconds + sum(nfe(s, k) for _, s, k in eval_points(preset)) * nfe_seconds
    return n_runs * per_run


# ---- training and evaluation (the slow part) ---------------------------------------------------------------


def train_config(preset: Preset, spec: RunSpec, steps: int):
    """The ``TrainConfig`` of a run, trained up to ``steps`` (the only field that changes between stops)."""
    from diffloss.density import density_from_spec
    from diffloss.process import process_from_spec
    from diffloss.train import TrainConfig
    from diffloss.weighting import weighting_from_spec

    proc = process_from_spec(spec.variant.process)
    return TrainConfig(
        data=preset.data,
        process=proc.to_dict(),
        target=spec.variant.target,
        weighting=weighting_from_spec(spec.variant.weighting).to_dict(),
        density=density_from_spec(spec.variant.density, proc).to_dict(),
        backbone={"name": "unet", "preset": preset.unet, "channels": preset.channels},  # the data are images
        steps=steps,
        batch=preset.batch,
        seed=spec.seed,
        lr=preset.lr,
        warmup=preset.warmup,
        ema_decay=preset.ema_decay,
        grad_clip=preset.grad_clip,
        ckpt_every=max(preset.train_steps),
        log_every=max(1, min(preset.train_steps) // 4),
    )


def execution(preset: Preset):
    """Where the preset's runs train: ``diffloss.train.Execution`` on ``preset.device`` (fp32, one process)."""
    import torch

    from diffloss.train import Execution

    return Execution(torch.device(preset.device))


def checkpoint_at(preset: Preset, spec: RunSpec, run_dir: Path, step: int) -> Path:
    """Train (or resume) the run up to ``step`` and keep a copy of that checkpoint; returns the copy's path."""
    from diffloss.train import CHECKPOINT_FILE

    keep = run_dir / f"ckpt-{step}.safetensors"
    if not keep.exists():
        runs.train_to(train_config(preset, spec, step), run_dir, execution=execution(preset))
        atomic_write(keep, lambda tmp: shutil.copyfile(run_dir / CHECKPOINT_FILE, tmp))
    return keep


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) per call of ``fn``, averaged over ``repeats`` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def measure_cost(preset: Preset, repeats: int = 20) -> dict[str, Any]:
    """Time one training update (eps-constant, after ``repeats`` warm-up updates) and one network evaluation of
    ``n_samples`` rows (one ddim step), in wall-clock and in this process's CPU seconds; on a shared machine the
    CPU time is close to what the same work takes on an idle one. Returns both with the expected runtime."""
    import os

    import torch

    from diffloss.sample import x0_predictor
    from diffloss.train import Run

    run = Run.create(train_config(preset, RunSpec(preset.variants[0], 0), repeats * 2), execution=execution(preset))
    _timed(run.update, repeats)
    step_wall, step_cpu = _timed(run.update, repeats)
    denoise = x0_predictor(run.ema.eval(), run.ema.process, run.objective["target"])
    x, s = torch.randn(preset.n_samples, *run.data.shape), torch.full((preset.n_samples,), 1.0)
    with torch.no_grad():
        nfe_wall, nfe_cpu = _timed(lambda: denoise(x, s), 5)
    n_runs = len(run_grid(preset))
    return {
        "preset": preset.name,
        "runs": n_runs,
        "step_seconds": {"wall": step_wall, "cpu": step_cpu},
        "nfe_seconds": {"wall": nfe_wall, "cpu": nfe_cpu},
        "expected_hours": {
            "wall": expected_seconds(preset, n_runs, step_wall, nfe_wall) / 3600,
            "cpu": expected_seconds(preset, n_runs, step_cpu, nfe_cpu) / 3600,
        },
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def run_one(preset: Preset, spec: RunSpec, run_dir: Path, evaluator: CheckpointEvaluator, log) -> None:
    """Do every missing evaluation of one run, training as far as each needs (finished evaluations are skipped)."""
    for step, sampler, steps in missing_evals(run_dir, preset):
        t0 = time.perf_counter()
        ckpt = checkpoint_at(preset, spec, run_dir, step)
        t_train = time.perf_counter() - t0
        options = dict(preset.sampling.get(sampler, {}))
        result = evaluator(ckpt, preset.n_samples, sampler, steps, device=preset.device, **options)
        record = {"run": spec.name, "variant": spec.variant.name, "seed": spec.seed, "step": step}
        record |= {"sampler": sampler, "nsteps": steps, "options": options, "train_seconds": t_train, **result}
        write_json_atomic(eval_path(run_dir, step, sampler, steps), record)
        log(f"{spec.name}: step {step} {sampler}-{steps}: FID {result['fid']:.4g} ({t_train:.0f} s train)")


def collect(root: Path, preset: Preset) -> list[dict[str, Any]]:
    """Every finished evaluation under ``root`` for the preset's grid (missing ones are left out)."""
    return runs.collect(
        (eval_path(root / "runs" / s.name, *p), {}) for s in run_grid(preset) for p in eval_points(preset)
    )


def grid(root: Path, preset: Preset) -> Grid[RunSpec]:
    """The runs under ROOT/runs; a run is finished when all its evaluations are."""
    return Grid(
        root / "runs",
        key=lambda s: s.name,
        finished=lambda s, d: not missing_evals(d, preset),
        timing=root / runs.TIMING_FILE,
    )


# ---- the report --------------------------------------------------------------------------------------------

COLUMNS = ("variant", "seed", "step", "sampler", "nsteps", "fid", "kid", "kid_std", "seconds", "train_seconds")


def series(agg: Agg, variant: str, axis: str, step: int, sampler: str, nsteps: int) -> list[tuple[int, Stat]]:
    """Sorted (x, statistic) of one variant along ``axis``: ``"step"`` (training steps at the given sampler and
    sampling steps) or ``"nsteps"`` (sampling steps of ``sampler`` at training step ``step``)."""
    if axis == "step":
        return sorted((k[1], v) for k, v in agg.items() if k[0] == variant and k[2:] == (sampler, nsteps))
    return sorted((k[3], v) for k, v in agg.items() if k[0] == variant and k[1] == step and k[2] == sampler)


def plot(agg: Agg, preset: Preset, out: Path) -> list[Path]:
    """Two figures next to ``out``: FID vs training step (probe sampler) and FID vs sampling steps at the last
    step (one panel per sampler); mean over seeds with a ± std band, log-log axes."""
    plt = runs.pyplot()
    last, samplers = preset.train_steps[-1], sorted({s for s, _ in preset.grid})
    fig, ax = plt.subplots(figsize=(6, 4))
    fig2, axes = plt.subplots(1, len(samplers), figsize=(5 * len(samplers), 4), squeeze=False)
    panels = [(ax, "step", *preset.probe, "training step")]
    panels += [(a, "nsteps", s, 0, f"sampling steps ({s})") for s, a in zip(samplers, axes[0])]
    for a, axis, sampler, nsteps, xlabel in panels:
        for variant in preset.variants:
            pts = series(agg, variant.name, axis, last, sampler, nsteps)
            if not pts:
                continue
            xs = np.array([x for x, _ in pts], dtype=float)
            m, sd = np.array([v[0] for _, v in pts]), np.nan_to_num(np.array([v[1] for _, v in pts]))
            style = {"eps": "-", "v": "--"}.get(variant.target, ":")
            (line,) = a.plot(xs, m, style, marker="o", ms=3, label=variant.name)
            a.fill_between(xs, m - sd, m + sd, color=line.get_color(), alpha=0.15)
        a.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="FID (classifier features)")
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=7)
    ax.set_title(f"FID vs training step ({preset.probe[0]}, {preset.probe[1]} steps)")
    fig2.suptitle(f"FID vs sampling steps at training step {last}")
    paths = []
    for f, suffix in ((fig, "train_steps"), (fig2, "sampling_steps")):
        path = out.with_name(f"{out.stem}_{suffix}.png")
        f.tight_layout()
        paths.append(runs.save_figure(f, path, dpi=110))
    return paths


compare = partial(runs.compare, name="debiased")  # (base, debiased) -> (change %, verdict)


def verdict(agg: Agg, preset: Preset) -> list[str]:
    """Table rows: debiased against constant for each family (eps, v, flow) and each sampler x steps at the
    last training step, with means ± std, the relative change and ``compare``'s verdict."""
    last = preset.train_steps[-1]
    lines = []
    for family in ("eps", "v", "flow"):
        for sampler, k in sorted({preset.probe, *preset.grid}):
            base = agg.get((f"{family}-constant", last, sampler, k))
            deb = agg.get((f"{family}-debiased", last, sampler, k))
            if base and deb and base[2] and deb[2]:
                change, word = compare(base, deb)
                lines.append(f"| {family} | {sampler} | {k} | {base.text()} | {deb.text()} | {change:+.0f}% | {word} |")
    return lines


def runtime_text(root: Path, preset: Preset, rows: Sequence[dict[str, Any]]) -> str:
    """The expected runtime (from ROOT/cost.json of ``--measure``, if any) and the compute the finished
    evaluations took."""
    spent = sum(r.get("seconds", 0) + r.get("train_seconds", 0) for r in rows) / 3600
    text = (
        f"the finished evaluations took {spent:.2f} h of wall time summed over runs (training + sampling, one "
        "thread per run, on a machine shared with other jobs, so the CPU time is lower)."
    )
    cost_file = root / "cost.json"
    if cost_file.exists():
        c = json.loads(cost_file.read_text(encoding="utf-8"))
        text = (
            f"`--measure` at {c['measured_at']} (load average {c['load_average']:.1f} on 2 cores, {c['threads']} "
            f"thread): one training update {c['step_seconds']['wall']:.3f} s wall / {c['step_seconds']['cpu']:.3f} s "
            f"CPU, one network evaluation of {preset.n_samples} samples {c['nfe_seconds']['wall']:.3f} s wall / "
            f"{c['nfe_seconds']['cpu']:.3f} s CPU; expected for all {c['runs']} runs: "
            f"{c['expected_hours']['cpu']:.2f} h on an idle machine (CPU time), {c['expected_hours']['wall']:.2f} h "
            "at the load of the measurement; " + text
        )
    return text


def summary(agg: Agg, preset: Preset) -> str:
    """One sentence per claim for eps-prediction at the last step: FID with the probe sampler, and FID at the
    fewest sampling steps of each sampler."""
    last = preset.train_steps[-1]
    base, deb = agg.get(("eps-constant", last, *preset.probe)), agg.get(("eps-debiased", last, *preset.probe))
    if not base or not deb or min(base[2], deb[2]) < 2:
        return "**Claims: not decidable yet (eps-constant and eps-debiased need at least 2 finished seeds each).**"
    few = {s: min(k for s2, k in preset.grid if s2 == s) for s, _ in preset.grid}
    out = [f"**Claim 1 (better FID), eps, {preset.probe[0]} {preset.probe[1]} steps: {_claim(base, deb)}.**"]
    for sampler, k in sorted(few.items()):
        b, d = agg.get(("eps-constant", last, sampler, k)), agg.get(("eps-debiased", last, sampler, k))
        if b and d:
            out.append(f"**Claim 2 (few sampling steps), eps, {sampler} {k} steps: {_claim(b, d)}.**")
    return " ".join(out)


def _claim(base: Stat, deb: Stat) -> str:
    """'holds here' / 'does not hold' / 'not supported' for "debiased has the lower FID", with the evidence."""
    change, word = compare(base, deb)
    evidence = f"FID {base[0]:.3g} -> {deb[0]:.3g} ({change:+.0f}%, seed std {base[1]:.2g} / {deb[1]:.2g})"
    if word == "debiased better":
        return f"holds here: {evidence}"
    if word == "debiased worse":
        return f"does not hold, debiased is worse: {evidence}"
    return f"not supported ({word}): {evidence}"


def write_report(root: Path, preset: Preset, command: str, report: Path) -> None:
    rows = collect(root, preset)
    agg = aggregate(rows)
    csv_path = report.with_suffix(".csv")
    done = sum(not missing_evals(root / "runs" / s.name, preset) for s in run_grid(preset))
    total = len(run_grid(preset))
    figs = plot(agg, preset, report) if rows else []
    last = preset.train_steps[-1]
    label = {
        "smoke": "**SMOKE RUN — proves the pipeline works end to end; these numbers are not results.**",
    }.get(preset.name, "")
    if done < total:
        label += f"\n\n**PARTIAL: {done} of {total} runs finished; the tables hold what was done.**"
    lines = [
        f"# Debiased weighting (Yu et al. 2024) — preset `{preset.name}`",
        "",
        label,
        "",
        "Command (resumable; each variant x seed in its own run directory, finished evaluations skipped):",
        "",
        f"    {command}",
        "",
        "On two cores, run it as two processes on disjoint seeds (append `--seeds 0,1` to one and `--seeds 2` to "
        "the other); the report gathers every finished run.",
        "",
        f"Setup: data `{preset.data}`, reference `{preset.ref}`, UNet preset `{preset.unet}`, batch {preset.batch}, "
        f"AdamW lr {preset.lr} (warm-up {preset.warmup}), EMA 0.999, levels t ~ U(0, 1) (every process's "
        f"default density). Training seeds {list(preset.seeds)}; evaluations at training steps "
        f"{list(preset.train_steps)}; {preset.n_samples} samples per evaluation from the EMA weights, starting "
        f"noise seed {SAMPLE_SEED} (the same for every run), Karras (rho = 7) schedule. FID and KID are in the "
        "128-d feature space of the project's own classifier (README, *Sample quality without downloads*): "
        "not comparable with Inception FIDs, and biased upwards at small sample sizes (compare at equal n only).",
        "",
        f"Runtime: {runtime_text(root, preset, rows)}",
        "",
        "| variant | process | target | weighting (as given to `diffloss train`) |",
        "|---|---|---|---|",
        *(f"| {v.name} | {v.process} | {v.target} | `{v.weighting}` |" for v in preset.variants),
        "",
        "`debiased` is defined once, as 1/sqrt(SNR) on the eps-MSE, i.e. sqrt(SNR) on the x0-MSE; on v (VP) it "
        "is sqrt(SNR)/(SNR + 1), on the flow velocity t(1 - t) (diffloss.weighting). `constant` is weight 1 on "
        "the variant's own target (on eps: DDPM's L_simple, the paper's baseline).",
        "",
        "Caveats: the weights are the published formulas, not normalized, and every variant uses the same lr and "
        "gradient-norm clip 1.0. AdamW is invariant to a constant loss scale, but the clip is not: on eps the "
        "debiased weight reaches e^5 = 148 at the VP process's lowest log-SNR (-10), so its gradients are clipped "
        "more often. FID in classifier features from a few hundred samples measures coarse sample quality; "
        "small models trained for minutes are far from the paper's regime.",
        "",
        f"## FID vs training step ({preset.probe[0]}, {preset.probe[1]} sampling steps), mean ± std over seeds",
        "",
        "| variant | " + " | ".join(f"step {s}" for s in preset.train_steps) + " |",
        "|---|" + "---|" * len(preset.train_steps),
    ]
    for v in preset.variants:
        cells = [agg.get((v.name, s, *preset.probe), NONE).text() for s in preset.train_steps]
        lines.append(f"| {v.name} | " + " | ".join(cells) + " |")
    points = sorted({preset.probe, *preset.grid})
    lines += [
        "",
        f"## FID vs sampling steps at training step {last}, mean ± std over seeds",
        "",
        "| variant | " + " | ".join(f"{s} {k}" for s, k in points) + " |",
        "|---|" + "---|" * len(points),
    ]
    for v in preset.variants:
        cells = [agg.get((v.name, last, s, k), NONE).text() for s, k in points]
        lines.append(f"| {v.name} | " + " | ".join(cells) + " |")
    lines += ["", *(f"![{p.stem}]({p.name})" for p in figs), ""]
    lines += [
        "## Debiased vs constant, and the paper's claims",
        "",
        f"Paper (Yu et al. 2024, arXiv 2310.08442): {PAPER}; and good samples with fewer sampling steps. "
        f"Here, at training step {last}:",
        "",
        summary(agg, preset),
        "",
        "| family | sampler | steps | constant | debiased | change | verdict |",
        "|---|---|---|---|---|---|---|",
        *verdict(agg, preset),
        "",
        "A difference counts only when the two means differ by more than the larger seed standard deviation.",
        "",
        keep_notes(report),
        "",
        f"Per-evaluation numbers: [{csv_path.name}]({csv_path.name}).",
        "",
    ]
    runs.write_report(report, "\n".join(lines), table=csv_text(COLUMNS, rows))


def main(argv: Sequence[str] | None = None) -> int:
    ap = runs.experiment_parser(__doc__, "debiased_weighting", PRESETS, REPORTS)
    ap.add_argument(
        "--measure",
        action="store_true",
        help="only time a training step and a sampling step and "
        "write the expected runtime of the preset to ROOT/cost.json",
    )
    ap.add_argument(
        "--seeds",
        default=None,
        help="train only these of the preset's seeds, e.g. 2 (to run two processes on disjoint seeds; "
        "the report always gathers every finished run)",
    )
    args = runs.parse_experiment_args(ap, argv)
    preset = PRESETS[args.preset]
    seeds = None if args.seeds is None else set(runs.parse_seeds(args.seeds, allowed=preset.seeds))
    report = runs.report_path(args, REPORTS, "debiased_weighting", MAIN_PRESET)
    command = f"PYTHONPATH=src python experiments/debiased_weighting.py --preset {preset.name} --root {args.root}"

    if args.measure:
        cost = measure_cost(preset)
        write_json_atomic(args.root / "cost.json", cost)
        print(json.dumps(cost, indent=2))
        return 0
    if not args.report_only:
        evaluator = CheckpointEvaluator(preset.ref)
        chosen = [spec for spec in run_grid(preset) if seeds is None or spec.seed in seeds]
        grid(args.root, preset).run(chosen, partial(run_one, preset, evaluator=evaluator, log=log))
    write_report(args.root, preset, command, report)
    log(f"wrote {report}")
    return 0


if __name__ == "__main__":
    run_cli(main)
