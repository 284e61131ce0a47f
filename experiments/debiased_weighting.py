"""The debiased-weighting experiment (Yu et al. 2024, arXiv 2310.08442): does w = 1/sqrt(SNR) on the eps-MSE
give a better FID, and good samples with fewer sampling steps, than the usual weightings?

Two sets of variants (``Preset.variants``), each with the project's UNet:

- ``VARIANTS`` (presets smoke, digits, mnist), continuous time, levels t ~ U(0, 1), gradient-norm clip 1:
  eps-prediction on the VP process with DDPM's linear betas with ``constant`` (1 on eps, DDPM's L_simple),
  ``debiased`` (1/sqrt(SNR) on eps), ``min-snr`` (gamma = 5) and ``p2`` (k = 1, gamma = 1); v-prediction with
  ``constant`` (1 on v) and ``debiased`` converted to v: sqrt(SNR)/(SNR + 1); flow matching (process ``flow``,
  velocity target) with ``constant`` and ``debiased`` converted to the velocity: t(1 - t) (diffloss.weighting
  defines every weight once, on x0, and converts it).
- ``DDPM_VARIANTS`` (presets smoke14, mnist14, gpu; ``DDPM_SETTING``), the setting of the paper's headline
  number: DDPM's discrete chain (T = 1000, linear betas), steps n ~ U{0..T-1}, eps-prediction, ``constant`` vs
  ``debiased``, no gradient clipping; evaluated with ancestral sampling (``ddpm``, clip_denoised) and DDIM on
  the chain's respaced timesteps.

Each variant x seed trains in its own directory ROOT/runs/VARIANT-sSEED (``diffloss.train``, bit-exact resume),
seed-major. Training stops at every step of ``train_steps``; the checkpoint is copied to ``ckpt-STEP.safetensors``
and evaluated: FID (and KID) in the project classifier's feature space of ``n_samples`` samples from the EMA
weights against the reference set, with the ``probe`` sampler at every step, and with every sampler x steps of
``grid`` at the last step. Each evaluation is one JSON file ROOT/runs/RUN/eval/STEP-SAMPLER-STEPS.json; a run
whose files exist is skipped, so the command resumes where it was stopped. Finally the finished evaluations
are gathered into reports/debiased_weighting[_PRESET].{md,csv} (no suffix for ``MAIN_PRESET``) and two PNG plots
(mean ± std over seeds), ending with the verdict on the paper's claim; a report of a DDPM preset also shows the
v and flow rows of the committed digits CSV. A hand-written reading between the markers ``NOTES_BEGIN`` and
``NOTES_END`` of an existing report is kept. ``--report-only`` just rewrites the report; ``--measure`` times one
update and one network call and writes the expected runtime of the preset to ROOT/cost.json (quoted by the
report).

Presets: ``smoke`` and ``smoke14`` (seconds per run; check the pipeline, not a result), ``digits`` (1.3 h of CPU
for 24 runs of 1200 updates), ``mnist`` (1.9 h of CPU for 24 runs of only 400 updates: far from converged),
``mnist14`` (the main one: 6 runs of 2400 updates at 14x14, ~30 CPU minutes at one thread) and ``gpu`` (MNIST
28x28, the ``small`` UNet, 6 runs of 40k updates of 128 on one CUDA GPU; sized by estimate, never run).

Run: PYTHONPATH=src OMP_NUM_THREADS=1 python experiments/debiased_weighting.py --preset mnist14 --root ROOT --threads 1
"""

from __future__ import annotations

import csv
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
    to ``TrainConfig``. Where runs train and sample is ``--device`` (the harness's: CUDA when present)."""

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
               (("ddpm", 100), ("ddim", 50), ("ddim", 20)), **DDPM_SETTING, channels=16, lr=1e-3),
        Preset("gpu", "mnist", "mnist:test", (0, 1, 2), (10_000, 20_000, 40_000), 128, "small", 10_000,
               ("ddim", 50), (("ddpm", 100), ("ddim", 50), ("ddim", 20)), **DDPM_SETTING | {"ema_decay": 0.9999},
               warmup=1000),
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
    groups: dict[tuple, list[float | None]] = {}
    for r in rows:  # None: a diverged model's metric, left out by mean_std
        groups.setdefault((r["variant"], r["step"], r["sampler"], r["nsteps"]), []).append(r[key])
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


def checkpoint_at(preset: Preset, spec: RunSpec, run_dir: Path, step: int, device=None) -> Path:
    """Train (or resume) the run up to ``step`` on ``device`` (None: the CPU) and keep a copy of that checkpoint;
    returns the copy's path."""
    from diffloss.train import CHECKPOINT_FILE

    keep = run_dir / f"ckpt-{step}.safetensors"
    if not keep.exists():
        runs.train_to(train_config(preset, spec, step), run_dir, device)
        atomic_write(keep, lambda tmp: shutil.copyfile(run_dir / CHECKPOINT_FILE, tmp))
    return keep


def measure_cost(preset: Preset, repeats: int = 20, device=None) -> dict[str, Any]:
    """Time one training update (eps-constant, after ``repeats`` warm-up updates) and one network evaluation of
    ``n_samples`` rows (one ddim step), in wall-clock and in this process's CPU seconds; on a shared machine the
    CPU time is close to what the same work takes on an idle one. Returns both with the expected runtime."""
    import os

    import torch

    from diffloss.sample import x0_predictor
    from diffloss.train import Execution, Run

    ex = Execution(device or torch.device("cpu"))
    run = Run.create(train_config(preset, RunSpec(preset.variants[0], 0), repeats * 2), execution=ex)
    at = run.x.device
    runs.per_call(run.update, repeats, at)  # warm-up
    step_wall, step_cpu = runs.per_call(run.update, repeats, at)
    denoise = x0_predictor(run.ema.eval(), run.ema.process, run.objective["target"])
    x, s = torch.randn(preset.n_samples, *run.data.shape, device=at), torch.full((preset.n_samples,), 1.0, device=at)
    with torch.no_grad():
        nfe_wall, nfe_cpu = runs.per_call(lambda: denoise(x, s), 5, at)
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


def run_one(preset: Preset, spec: RunSpec, run_dir: Path, evaluator: CheckpointEvaluator, log, device=None) -> None:
    """Do every missing evaluation of one run, training as far as each needs on ``device`` (None: the CPU; the
    evaluator samples where it was told); finished evaluations are skipped."""
    for step, sampler, steps in missing_evals(run_dir, preset):
        t0 = time.perf_counter()
        ckpt = checkpoint_at(preset, spec, run_dir, step, device)
        t_train = time.perf_counter() - t0
        options = dict(preset.sampling.get(sampler, {}))
        result = evaluator(ckpt, preset.n_samples, sampler, steps, **options)
        record = {"run": spec.name, "variant": spec.variant.name, "seed": spec.seed, "step": step}
        record |= {"sampler": sampler, "nsteps": steps, "options": options, "train_seconds": t_train, **result}
        write_json_atomic(eval_path(run_dir, step, sampler, steps), record)
        score = "none (non-finite samples)" if result["fid"] is None else f"{result['fid']:.4g}"
        log(f"{spec.name}: step {step} {sampler}-{steps}: FID {score} ({t_train:.0f} s train)")


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
    step (one panel per sampler); mean over seeds with ± std bars and band, log-log axes."""
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
            bars = a.errorbar(xs, m, yerr=sd, fmt=style, marker="o", ms=3, capsize=3, label=variant.name)
            a.fill_between(xs, m - sd, m + sd, color=bars.lines[0].get_color(), alpha=0.15)
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

PAPER_UPDATES = 500_000
"""The paper's number of training updates as the issue gives it (~500k; not read from the paper's source)."""
EARLIER = "digits"  # the preset whose committed CSV holds the v and flow variants measured before


def sampler_label(preset: Preset, sampler: str) -> str:
    """The sampler with the preset's further keywords, e.g. ``ddpm (clip=1.0)``."""
    options = preset.sampling.get(sampler, {})
    return sampler + (f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else "")


def points(preset: Preset) -> list[tuple[str, int]]:
    """The (sampler, sampling steps) evaluated at the last training step, sorted."""
    return sorted({preset.probe, *preset.grid})


def verdict(agg: Agg, preset: Preset, families: Sequence[str] = ("eps", "v", "flow")) -> list[str]:
    """Table rows: debiased against constant for each of ``families`` and each sampler x steps at the last
    training step, with means ± std, the relative change and ``compare``'s verdict."""
    last = preset.train_steps[-1]
    lines = []
    for family in families:
        for sampler, k in points(preset):
            base = agg.get((f"{family}-constant", last, sampler, k))
            deb = agg.get((f"{family}-debiased", last, sampler, k))
            if base and deb and base[2] and deb[2]:
                change, word = compare(base, deb)
                lines.append(
                    f"| {family} | {sampler_label(preset, sampler)} | {k} | {base.text()} | {deb.text()} "
                    f"| {change:+.0f}% | {word} |"
                )
    return lines


def claim_verdict(agg: Agg, preset: Preset, complete: bool) -> str:
    """``holds`` / ``does not hold`` / ``inconclusive`` for "the debiased weight lowers the FID of eps-prediction",
    over every sampler x steps at the last training step: holds when debiased is better (``compare``) at every
    one, does not hold when it is better at none and worse at one at least; otherwise, or when the run is
    partial (``complete`` false) or a point lacks seeds, inconclusive."""
    if not complete:
        return "inconclusive"
    last = preset.train_steps[-1]
    pairs = [(agg.get(("eps-constant", last, s, k)), agg.get(("eps-debiased", last, s, k))) for s, k in points(preset)]
    if any(b is None or d is None for b, d in pairs):
        return "inconclusive"
    words = [compare(b, d)[1] for b, d in pairs]
    if all(w == "debiased better" for w in words):
        return "holds"
    if "debiased better" not in words and "debiased worse" in words:
        return "does not hold"
    return "inconclusive"


def cpu_minutes(root: Path, preset: Preset) -> dict[str, tuple[float, float, int]]:
    """Variant -> (CPU minutes, wall minutes, finished runs) of the preset's finished runs, from ROOT/timing.jsonl
    (``Grid``'s timing: training + evaluation, summed over the pieces of a resumed run)."""
    timing = runs.read_timing(root / runs.TIMING_FILE)
    out: dict[str, tuple[float, float, int]] = {}
    for spec in run_grid(preset):
        if spec.name in timing:
            cpu, wall, n = out.get(spec.variant.name, (0.0, 0.0, 0))
            t = timing[spec.name]
            out[spec.variant.name] = (cpu + t["cpu"] / 60, wall + t["wall"] / 60, n + 1)
    return out


def runtime_text(root: Path, preset: Preset) -> str:
    """The compute the finished runs took, in all and per variant (``cpu_minutes``: equal compute per arm shows
    as equal CPU minutes), and the expected runtime (ROOT/cost.json of ``--measure``, if any)."""
    spent = cpu_minutes(root, preset)
    cpu, wall, n = (sum(v[i] for v in spent.values()) for i in range(3))
    arms = "; ".join(f"{name} {c:.1f} CPU min over {k} runs" for name, (c, _, k) in spent.items())
    text = (
        f"{n} finished runs took {cpu:.1f} CPU minutes ({wall:.1f} min wall; training + evaluation, one process, "
        f"one thread, from ROOT/timing.jsonl){': ' + arms if arms else ''}."
    )
    cost_file = root / "cost.json"
    if cost_file.exists():
        c = json.loads(cost_file.read_text(encoding="utf-8"))
        text += (
            f" `--measure` at {c['measured_at']} (load average {c['load_average']:.1f}, {c['threads']} thread): one "
            f"training update {c['step_seconds']['cpu']:.3f} s CPU, one network evaluation of {preset.n_samples} "
            f"samples {c['nfe_seconds']['cpu']:.3f} s CPU; expected for all {c['runs']} runs "
            f"{60 * c['expected_hours']['cpu']:.0f} CPU minutes."
        )
    return text


def network_parameters(root: Path, preset: Preset) -> int | None:
    """Parameters of the trained network, counted in the first finished run's last checkpoint (None if none)."""
    from diffloss.checkpoint import load_checkpoint

    for spec in run_grid(preset):
        ckpt = root / "runs" / spec.name / f"ckpt-{preset.train_steps[-1]}.safetensors"
        if ckpt.exists():
            return sum(v.numel() for k, v in load_checkpoint(ckpt)[0].items() if k.startswith("model/"))
    return None


def setting_text(root: Path, preset: Preset) -> str:
    """The training and sampling settings of the preset, as one paragraph."""
    from diffloss.train import ema_decay_at

    last = preset.train_steps[-1]
    cfg = train_config(preset, run_grid(preset)[0], last)
    params = network_parameters(root, preset)
    width = f", base width {preset.channels}" if preset.channels else ""
    size = f" ({params / 1e6:.2f} M parameters)" if params else ""
    clip = f"gradient-norm clip {preset.grad_clip}" if preset.grad_clip > 0 else "no gradient clipping"
    samplers = ", ".join(f"`{sampler_label(preset, s)}`" for s in sorted({s for s, _ in points(preset)}))
    return (
        f"Data `{preset.data}`, FID reference `{preset.ref}`, UNet preset `{preset.unet}`{width}{size}, batch "
        f"{preset.batch}, AdamW lr {preset.lr} (linear warm-up over {preset.warmup} updates), {clip}, EMA decay "
        f"{preset.ema_decay} capped by the warm-up min(decay, (1 + n)/(10 + n)): {ema_decay_at(cfg, last - 1):.4f} at "
        f"the last update n = {last} (an averaging horizon of ~{1 / (1 - ema_decay_at(cfg, last - 1)):.0f} "
        f"updates). Training seeds {list(preset.seeds)}; evaluations at training steps {list(preset.train_steps)}; "
        f"{preset.n_samples} samples per evaluation from the EMA weights, starting noise seed {SAMPLE_SEED} (the "
        f"same for every run); samplers {samplers} (`spacing=respaced`: evenly spaced timesteps of the discrete "
        "chain; otherwise Karras rho = 7 levels). FID and KID are in the feature space of the project's own "
        "classifier (README, *Sample quality without downloads*): not comparable with Inception FIDs, and biased "
        "upwards at small sample sizes (compare at equal n only)."
    )


def earlier_table(families: Sequence[str]) -> list[str]:
    """The ``verdict`` rows of ``families`` from the committed CSV of the ``EARLIER`` preset's report (runs
    measured before; [] if that CSV is missing)."""
    path = REPORTS / f"debiased_weighting_{EARLIER}.csv"
    if not path.exists():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        number = lambda v: float(v) if v not in ("", None) else None  # noqa: E731 (an empty cell: no value)
        rows = [
            r | {"step": int(r["step"]), "nsteps": int(r["nsteps"]), "fid": number(r["fid"])} for r in csv.DictReader(f)
        ]
    return verdict(aggregate(rows), PRESETS[EARLIER], families)


def paper_text(preset: Preset, complete: bool, agg: Agg) -> list[str]:
    """The closing section: the verdict on the paper's claim, the paper's number and what still differs."""
    last = preset.train_steps[-1]
    word = claim_verdict(agg, preset, complete)
    partial_note = "" if complete else " (the run is partial)"
    return [
        "## Verdict on the claim",
        "",
        f"Paper (Yu et al. 2024, arXiv 2310.08442): {PAPER}. The source could be read only in part; what of the "
        "paper's setting is known here comes from that part and from the issue.",
        "",
        f'**Claim "the debiased weight gives a better FID than DDPM\'s constant weight on eps": {word} at this '
        f"budget{partial_note}** ({last} updates, {100 * last / PAPER_UPDATES:.2f}% of the paper's ~"
        f"{PAPER_UPDATES // 1000}k; the rule: holds if debiased is better beyond the seed spread with every "
        "sampler above, does not hold if it is better with none and worse with one at least).",
        "",
        "What still differs from the paper's setting:",
        f"- data and resolution: `{preset.data}` here; the paper's image data sets and resolutions could not be "
        "confirmed from the part of the source that was read;",
        f"- network: the `{preset.unet}` UNet{f' at base width {preset.channels}' if preset.channels else ''} here "
        "(parameters above) against the paper's full-size UNet (DDPM's CIFAR-10 UNet has 35.7 M parameters);",
        f"- updates: {last} of batch {preset.batch} here against ~{PAPER_UPDATES // 1000}k "
        f"({last / PAPER_UPDATES:.4f}x);",
        f"- EMA: {preset.ema_decay} (effective decay above) against DDPM's 0.9999;",
        f"- lr: {preset.lr} against DDPM's 2e-4 (the paper's own optimizer settings were not read);",
        f"- FID: {preset.n_samples} samples in the project classifier's features against FID-10k in Inception "
        "features: the numbers are not comparable, only the direction of the change is.",
    ]


def write_report(root: Path, preset: Preset, command: str, report: Path) -> None:
    rows = collect(root, preset)
    agg = aggregate(rows)
    csv_path = report.with_suffix(".csv")
    done = sum(not missing_evals(root / "runs" / s.name, preset) for s in run_grid(preset))
    total = len(run_grid(preset))
    figs = plot(agg, preset, report) if rows else []
    last = preset.train_steps[-1]
    partial = f"{done} of {total} runs finished; the tables hold what was done" if done < total else None
    label = runs.report_status(preset.name, partial)
    families = sorted({v.name.split("-")[0] for v in preset.variants}, key=("eps", "v", "flow").index)
    lines = [
        f"# Debiased weighting (Yu et al. 2024) — preset `{preset.name}`",
        "",
        label,
        "",
        "Command (resumable; each variant x seed in its own run directory, finished evaluations skipped; runs "
        "seed-major, so a partial run compares every variant):",
        "",
        f"    {command}",
        "",
        f"Setup: {setting_text(root, preset)}",
        "",
        f"Runtime: {runtime_text(root, preset)}",
        "",
        "| variant | process | target | weighting | level density |",
        "|---|---|---|---|---|",
        *(f"| {v.name} | `{v.process}` | {v.target} | `{v.weighting}` | `{v.density}` |" for v in preset.variants),
        "",
        "`debiased` is defined once, as 1/sqrt(SNR) on the eps-MSE, i.e. sqrt(SNR) on the x0-MSE; on v (VP) it "
        "is sqrt(SNR)/(SNR + 1), on the flow velocity t(1 - t) (diffloss.weighting). `constant` is weight 1 on "
        "the variant's own target (on eps: DDPM's L_simple, the paper's baseline). The weights are the published "
        "formulas, not normalized; every variant uses the same lr.",
        "",
        f"## Debiased vs constant at training step {last}, mean ± std over seeds",
        "",
        "| family | sampler | steps | constant | debiased | change | verdict |",
        "|---|---|---|---|---|---|---|",
        *verdict(agg, preset, families),
        "",
        "A difference counts only when the two means differ by more than the larger seed standard deviation.",
        "",
        f"## FID vs training step ({preset.probe[0]}, {preset.probe[1]} sampling steps), mean ± std over seeds",
        "",
        "| variant | " + " | ".join(f"step {s}" for s in preset.train_steps) + " |",
        "|---|" + "---|" * len(preset.train_steps),
        *(
            f"| {v.name} | "
            + " | ".join(agg.get((v.name, s, *preset.probe), NONE).text() for s in preset.train_steps)
            + " |"
            for v in preset.variants
        ),
        "",
        f"## FID vs sampling steps at training step {last}, mean ± std over seeds",
        "",
        "| variant | " + " | ".join(f"{s} {k}" for s, k in points(preset)) + " |",
        "|---|" + "---|" * len(points(preset)),
        *(
            f"| {v.name} | " + " | ".join(agg.get((v.name, last, s, k), NONE).text() for s, k in points(preset)) + " |"
            for v in preset.variants
        ),
        "",
        *(f"![{p.stem}]({p.name})" for p in figs),
        "",
    ]
    others = [f for f in ("v", "flow") if f not in families]
    earlier = earlier_table(others) if others else []
    if earlier:
        lines += [
            f"## Earlier runs: {' and '.join(others)} variants (preset `{EARLIER}`, measured before)",
            "",
            f"Not rerun here: 8x8 digits, continuous-time VP and flow, gradient-norm clip 1, 1200 updates, 3 seeds, "
            f"from [debiased_weighting_{EARLIER}.csv](debiased_weighting_{EARLIER}.csv); the whole earlier report, "
            f"including its eps variants, is [debiased_weighting_{EARLIER}.md](debiased_weighting_{EARLIER}.md).",
            "",
            "| family | sampler | steps | constant | debiased | change | verdict |",
            "|---|---|---|---|---|---|---|",
            *earlier,
            "",
        ]
    lines += [
        keep_notes(report),
        "",
        f"Per-evaluation numbers: [{csv_path.name}]({csv_path.name}).",
        "",
        *paper_text(preset, done == total, agg),
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
    command = (
        f"PYTHONPATH=src OMP_NUM_THREADS={args.threads} python experiments/debiased_weighting.py "
        f"--preset {preset.name} --root {args.root} --threads {args.threads}"
    )

    if args.measure:
        cost = measure_cost(preset, device=args.device)
        write_json_atomic(args.root / "cost.json", cost)
        print(json.dumps(cost, indent=2))
        return 0
    if not args.report_only:
        evaluator = CheckpointEvaluator(preset.ref, args.device)
        chosen = [spec for spec in run_grid(preset) if seeds is None or spec.seed in seeds]
        grid(args.root, preset).run(chosen, partial(run_one, preset, evaluator=evaluator, log=log, device=args.device))
    write_report(args.root, preset, command, report)
    log(f"wrote {report}")
    return 0


if __name__ == "__main__":
    run_cli(main)
