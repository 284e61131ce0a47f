"""Training schedules compared at equal compute, among them the optimal-loss schedule of Xu et al. 2025 (arXiv
2506.13763): weight from J*, levels drawn in proportion to w * (J_theta - J*) (issues 6 and 17).

Every (arm, seed) trains in its own directory OUT/PRESET/ARM/seedS; the arms of a preset share the data, UNet, steps,
batch, lr and EMA: equal training compute (steps * batch denoiser evaluations; the optimal schedule's one-off J*
table, exact estimator, cached by the data fingerprint, is extra). An arm is a network (process, target,
preconditioning: ``NETWORKS``) with a loss weighting and a level density (``ARMS``). The training runs in this process
(``diffloss.train``), so a killed run resumes bit for bit from its last checkpoint. Each final EMA model is then

- sampled with Heun (Karras schedule, starting noise seed ``SAMPLE_SEED``, the same for every run; a
  class-conditional model samples the classes in turn) at the preset's three step counts and scored by FID and KID
  in the features of the data's classifier (``eval_K.json``);
- diagnosed against J* at ``levels`` noise levels (``diffloss.diagnose``, common random numbers; a conditional model
  given each query's class, against the conditional J*: ``gap.json``);
- for an arm with the optimal density: its final level density, tracked J_theta, J* and weight per cell
  (``density.json``).

Each file is written atomically and skipped when present, so rerunning the command continues where it stopped; a
run directory is locked while a process works on it, so several copies of the command can share the runs
(``diffloss.runs``). ``timing.jsonl`` holds each part's wall and CPU seconds. Finally ``write_report`` gathers
everything into reports/schedule[_PRESET].{md,csv,json} and three plots; ``--report-only`` only does that.
Hand-written text between the markers ``NOTES_BEGIN`` and ``NOTES_END`` of an existing report is kept.

Presets:

- ``mnist14`` (issue 17, the main one): MNIST at 14x14 (50k images), class-conditional (label dropout 0.1), the
  papers' networks: EDM-preconditioned x0 (EDM's own schedule: lognormal levels, weight 1/c_out^2) and flow matching
  (raw velocity network; uniform and logit-normal t, constant weight), each against the optimal schedule; on the EDM
  network also the weight-only and density-only ablations and a sweep of w_max and the bump height (the paper's
  values could not be read). ~4 CPU minutes per run at 1 thread: far below the papers' budgets.
- ``gpu``: the same arms on MNIST at 28x28 with a wider UNet and 20x the updates, sized for one GPU (``--device``).
- ``digits`` (issue 6): raw eps networks (and an x0 ablation) on 8x8 digits with constant, min-SNR-5, EDM, debiased
  and optimal; ``full``: its original defaults; ``smoke``: seconds per run, checks the pipeline, not a result.

Run: OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/schedule.py --out /work/runs/schedule
(several copies of the command may run at once; each takes the next unfinished run)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from diffloss.errors import DifflossError
from diffloss.io import write_json_atomic
from diffloss.metrics.evaluate import SAMPLE_SEED, CheckpointEvaluator
from diffloss.runs import (
    DATA_TEXT,
    TIMING_FILE,
    Grid,
    Stat,
    cell_key,
    csv_text,
    experiment_parser,
    keep_notes,
    log,
    mean_std,
    parse_experiment_args,
    pyplot,
    read_json,
    read_timing,
    report_path,
    report_status,
    run_cli,
    save_figure,
    timed,
    train_to,
)
from diffloss.runs import compare as spread_compare
from diffloss.runs import write_report as write_files

REPORTS = Path(__file__).resolve().parent.parent / "reports"
NETWORKS = {  # name: (--process, --target, --precond) of `diffloss train`
    "eps": ("vp-cosine", "eps", "none"),  # issue 6's raw eps network
    "x0": ("vp-cosine", "x0", "none"),
    "edm": ("edm", "x0", "edm"),  # EDM's preconditioned network (Karras et al. 2022, Table 1)
    "fm": ("flow", "flow", "none"),  # flow matching: x_t = (1 - t) x0 + t eps, raw velocity network
}


@dataclass(frozen=True)
class Arm:
    """One training schedule on one network: ``weighting`` and ``density`` as `diffloss train` takes them;
    ``baselines``: the arms it is compared with (empty for a baseline itself)."""

    network: str
    weighting: str
    density: str
    baselines: tuple[str, ...] = ()

    @property
    def optimal_density(self) -> bool:
        return self.density.split(":")[0] == "optimal"


def _optimal(**params: str) -> str:
    """The ``optimal`` weighting/density spec with ``params`` (the same parameters for both)."""
    return "optimal" + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")


_DIGITS_BASELINES = ("constant", "min-snr-5", "edm", "debiased")
_EDM_SWEEP = {f"edm-wmax-{v}": _optimal(w_max=v) for v in ("1e1", "1e2", "1e3")} | {
    f"edm-bump-{v}": _optimal(bump_height=v) for v in ("1e2", "1e4")
}  # the defaults (w_max 1e4, bump height 1e3) are edm-optimal's; w_max 1e1 was added after 1e2 and 1e3 had run
ARMS = {
    # issue 6, digits: raw eps networks (and an x0 ablation with its control)
    "constant": Arm("eps", "constant:on=eps", "default"),
    "min-snr-5": Arm("eps", "min-snr:gamma=5", "default"),
    "edm": Arm("eps", "edm", "edm-lognormal"),
    "debiased": Arm("eps", "debiased", "default"),
    "optimal": Arm("eps", "optimal", "optimal", _DIGITS_BASELINES),
    "optimal-x0": Arm("x0", "optimal", "optimal", ("constant-x0",)),
    "constant-x0": Arm("x0", "constant:on=eps", "default"),
    # issue 17: the papers' networks, each against its own schedule
    "edm-own": Arm("edm", "edm", "edm-lognormal"),
    "edm-optimal": Arm("edm", "optimal", "optimal", ("edm-own",)),
    "edm-weight-only": Arm("edm", "optimal", "edm-lognormal", ("edm-own", "edm-optimal")),
    "edm-density-only": Arm("edm", "edm", "optimal", ("edm-own", "edm-optimal")),
    **{name: Arm("edm", spec, spec, ("edm-own", "edm-optimal")) for name, spec in _EDM_SWEEP.items()},
    "fm-uniform": Arm("fm", "constant:on=flow", "uniform-t"),
    "fm-logit-normal": Arm("fm", "constant:on=flow", "logit-normal"),
    "fm-optimal": Arm("fm", "optimal", "optimal", ("fm-uniform", "fm-logit-normal")),
    "fm-wmax-1e2": Arm(
        "fm", _optimal(w_max="1e2"), _optimal(w_max="1e2"), ("fm-uniform", "fm-logit-normal", "fm-optimal")
    ),
}
DIGITS_ARMS = ("constant", "min-snr-5", "edm", "debiased", "optimal")  # issue 6's comparison
PAPER_ARMS = ("edm-own", "edm-optimal", "fm-uniform", "fm-logit-normal", "fm-optimal")  # issue 17's comparison
ABLATIONS = ("edm-weight-only", "edm-density-only", *_EDM_SWEEP, "fm-wmax-1e2")
SAMPLER = "heun"
PAPER = (
    "FID -2% (CIFAR-10, EDM) to -25% (ImageNet-64, flow matching) against each model's original schedule "
    "(Xu et al. 2025, abstract and summaries; the per-setting table and the schedule's hyper-parameters could not "
    "be read here)"
)


@dataclass(frozen=True)
class Preset:
    """The size of the experiment (the same for every arm) and its arms."""

    name: str
    steps: int
    batch: int
    channels: int
    seeds: tuple[int, ...]
    n_samples: int
    levels: int  # diagnose levels, log-spaced s in [0.002, 80]
    queries: int  # diagnose (x0, eps) draws per level
    lr: float = 2e-4
    warmup: int = 200
    ckpt_every: int = 500
    data: str = "digits"
    arms: tuple[str, ...] = DIGITS_ARMS  # the default of --schedules
    conditional: bool = False  # class-conditional training (label dropout 0.1) and sampling
    sampling_steps: tuple[int, ...] = (10, 20, 50)
    grad_clip: float = 1.0
    ema_decay: float = 0.999


_PAPER_SETTING = dict(
    data="mnist14",
    arms=(*PAPER_ARMS, *ABLATIONS),
    conditional=True,
    sampling_steps=(10, 18, 32),
    lr=1e-3,
    warmup=100,
    grad_clip=0.0,
    ema_decay=0.995,
)
PRESETS = {
    p.name: p
    for p in (
        Preset("smoke", 20, 32, 8, (0, 1), 64, 6, 256, warmup=5),
        Preset("smoke-paper", 12, 16, 8, (0, 1), 40, 4, 64, ckpt_every=6, **{**_PAPER_SETTING, "warmup": 2}),
        Preset("digits", 500, 64, 16, (0, 1, 2), 500, 12, 1024, ckpt_every=250),
        Preset("full", 4000, 64, 32, (0, 1, 2), 1000, 12, 1024),
        Preset("mnist14", 1500, 64, 16, (0, 1, 2), 500, 10, 512, ckpt_every=250, **_PAPER_SETTING),
        Preset("gpu", 20000, 128, 64, (0, 1, 2), 5000, 16, 2048, ckpt_every=2000,
               **{**_PAPER_SETTING, "data": "mnist", "sampling_steps": (10, 18, 50), "ema_decay": 0.9995}),
    )
}  # fmt: skip
MAIN_PRESET = "mnist14"


def run_key(preset: Preset, schedule: str, seed: int) -> str:
    """The directory of one (arm, seed) run under OUT."""
    return cell_key({"preset": preset.name, "schedule": schedule, "seed": seed}, "{preset}/{schedule}/seed{seed}")


def run_dir(out: Path, preset: Preset, schedule: str, seed: int) -> Path:
    return out / run_key(preset, schedule, seed)


def outputs(preset: Preset, schedule: str) -> list[str]:
    """The files a finished (arm, seed) run has in its directory."""
    evals = [f"eval_{k}.json" for k in preset.sampling_steps]
    return [*evals, "gap.json", *(["density.json"] if ARMS[schedule].optimal_density else [])]


def grid(out: Path, preset: Preset) -> Grid[tuple[str, int]]:
    """The (arm, seed) runs under ``out``; a run is finished when it has all its ``outputs``."""
    return Grid(
        out,
        key=lambda c: run_key(preset, *c),
        finished=lambda c, d: all((d / name).exists() for name in outputs(preset, c[0])),
    )


# ---- one run (the slow part) -----------------------------------------------------------------------------


LABEL_DROPOUT = 0.1  # of a class-conditional preset (EDM's and the guidance literature's usual value)


def train_config(preset: Preset, schedule: str):
    """The ``TrainConfig`` of one arm (seed 0; ``dataclasses.replace`` the seed). An optimal arm's J* table is
    computed here once (exact estimator, 32 levels, cached): for a class-conditional preset the floor of conditional
    training, (1 - p) J*_conditional + p J*_unconditional with label dropout p."""
    from diffloss.classes import num_classes_of
    from diffloss.data import load_dataset
    from diffloss.objective import build_objective
    from diffloss.process import get_process
    from diffloss.train import TrainConfig

    arm = ARMS[schedule]
    process, target, precond = NETWORKS[arm.network]
    proc, data = get_process(process), load_dataset(preset.data)
    dropout = LABEL_DROPOUT if preset.conditional else None
    objective = build_objective(target, arm.weighting, arm.density, proc, data, label_dropout=dropout)
    return TrainConfig(
        data=preset.data,
        process=proc.to_dict(),
        target=target,
        weighting=objective.weighting.to_dict(),
        density=objective.density.to_dict(),
        precond=precond,
        backbone={"name": "unet", "preset": "tiny", "channels": preset.channels},
        steps=preset.steps,
        batch=preset.batch,
        lr=preset.lr,
        warmup=preset.warmup,
        grad_clip=preset.grad_clip,
        ema_decay=preset.ema_decay,
        ckpt_every=preset.ckpt_every,
        conditional=preset.conditional,
        num_classes=num_classes_of(data.labels, preset.data) if preset.conditional else 0,
        label_dropout=dropout or 0.0,
    )


def density_table(directory: Path) -> dict[str, Any]:
    """The optimal density's final state per cell: log-SNR midpoints, probability per unit log-SNR, tracked
    J_theta (x0 MSE, EMA), J* and the weight on the x0 and on the trained target's MSE at the midpoints."""
    from diffloss.train import trained_objective

    objective = trained_objective(directory)
    proc, dens, w = objective["process"], objective["density"], objective["weighting"]
    edges = dens.edges(proc)
    mid = (edges[1:] + edges[:-1]) / 2
    return {
        "logsnr": mid.tolist(),
        "density": (dens.cell_mass(proc) / edges.diff()).tolist(),
        "jtheta_x0": dens.state()["jtheta"].tolist(),
        "seen": dens.state()["seen"].tolist(),
        "jstar_x0": dens.optimal_loss(mid).tolist(),
        "weight_x0": w.x0_weight(mid, proc).tolist(),
        "weight_target": w.weight(mid, proc, objective["target"].name).tolist(),
    }


def diagnose_run(directory: Path, preset: Preset, device=None) -> dict[str, Any]:
    """``diffloss diagnose --ckpt DIR --levels L --queries Q [--conditional]`` of the EMA model, as a dict."""
    from diffloss import diagnose_output

    d = diagnose_output.diagnose_run(
        directory, preset.data, levels=preset.levels, queries=preset.queries, conditional=preset.conditional,
        device=device,
    )  # fmt: skip
    return {"summary": d.summary(), "warning": d.warning(), "queries": preset.queries, "levels": d.to_rows()}


def run_one(
    preset: Preset, configs: dict, evaluator: CheckpointEvaluator, cell: tuple[str, int], d: Path, device=None
) -> None:
    """Train (or resume), evaluate, diagnose one (arm, seed) in ``d`` on ``device`` (None: the CPU); every finished
    output is skipped. The seconds of each part are appended to ``d/timing.jsonl``."""
    from diffloss.train import CHECKPOINT_FILE

    schedule, seed = cell
    with timed(d / TIMING_FILE, "train"):
        if train_to(replace(configs[schedule], seed=seed), d, device):
            log(f"{schedule} seed {seed}: trained {preset.steps} steps")
    for k in preset.sampling_steps:
        path = d / f"eval_{k}.json"
        if not path.exists():
            with timed(d / TIMING_FILE, f"sample_eval_{k}"):
                result = evaluator(d / CHECKPOINT_FILE, preset.n_samples, SAMPLER, k)
            write_json_atomic(path, {"schedule": schedule, "seed": seed, "sampler": SAMPLER, "nsteps": k, **result})
            score = "none (non-finite samples)" if result["fid"] is None else f"{result['fid']:.4g}"
            log(f"{schedule} seed {seed}: {SAMPLER} {k} steps FID {score}")
    if not (d / "gap.json").exists():
        with timed(d / TIMING_FILE, "diagnose"):
            gap = diagnose_run(d, preset, device)
        write_json_atomic(d / "gap.json", gap)
        log(f"{schedule} seed {seed}: {gap['summary']}")
    if ARMS[schedule].optimal_density and not (d / "density.json").exists():
        write_json_atomic(d / "density.json", density_table(d))


# ---- gathering and the report ----------------------------------------------------------------------------


def collect(out: Path, preset: Preset, schedules: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Per arm, one dict per finished seed: ``seed``, ``fid`` {k: value}, ``kid`` {k: value}, ``gap`` (diagnose
    rows or None), ``density`` (optimal density only, or None) and ``timing``. Seeds missing an eval are left out."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for schedule in schedules:
        for seed in preset.seeds:
            d = run_dir(out, preset, schedule, seed)
            evals = {k: read_json(d / f"eval_{k}.json") for k in preset.sampling_steps}
            if any(v is None for v in evals.values()):
                continue
            gap = read_json(d / "gap.json")
            runs.setdefault(schedule, []).append(
                {
                    "seed": seed,
                    "fid": {k: math.nan if v["fid"] is None else v["fid"] for k, v in evals.items()},
                    "kid": {k: math.nan if v["kid"] is None else v["kid"] for k, v in evals.items()},
                    "gap": gap["levels"] if gap else None,
                    "density": read_json(d / "density.json"),
                    "timing": read_timing(d / TIMING_FILE),
                }
            )
    return runs


Stats = dict[str, dict[int, Stat]]
"""arm -> sampling steps -> (mean, std, n) over seeds."""


def fid_stats(runs: dict[str, list[dict[str, Any]]], steps: Sequence[int], metric: str = "fid") -> Stats:
    """arm -> sampling steps -> (mean, std, n) of ``metric`` over seeds."""
    return {s: {k: mean_std([r[metric][k] for r in rs]) for k in steps} for s, rs in runs.items()}


def gap_curves(runs: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(s, mean over seeds, std over seeds) of diagnose column ``key`` per level (seeds without gap.json skipped); the
    ``mean_std`` convention: the std is NaN for a single seed (no band is drawn)."""
    rows = [r["gap"] for r in runs if r["gap"]]
    s = np.array([lv["sigma"] for lv in rows[0]])
    v = np.array([[lv[key] for lv in g] for g in rows])
    stats = [mean_std(column) for column in v.T]
    return s, np.array([st.mean for st in stats]), np.array([st.std for st in stats])


def compare(base: Stat | tuple[float, float, int], new: Stat | tuple[float, float, int]) -> tuple[float, str]:
    """(change of ``new``'s FID against ``base`` in %, verdict): a difference counts beyond the larger seed std."""
    return spread_compare(base, new, name="arm")


fmt = partial(Stat.text, show_n=False)  # no "(n=N)": the FID table has a seeds column


def _savefig(fig, path: Path) -> None:
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _width(schedule: str) -> float:
    """Line width of an arm in the plots: the arms that are compared with baselines stand out."""
    return 2 if ARMS[schedule].baselines else 1


def plot_fid(stats: Stats, steps: Sequence[int], path: Path) -> None:
    """FID vs sampling steps per arm, mean ± std over seeds as error bars (x slightly offset per arm)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (schedule, st) in enumerate(stats.items()):
        xs = np.array(steps, dtype=float) * (1 + 0.02 * (i - len(stats) / 2))
        m = [st[k][0] for k in steps]
        sd = [np.nan_to_num(st[k][1]) for k in steps]
        ax.errorbar(xs, m, yerr=sd, marker="o", ms=4, capsize=3, label=schedule, lw=_width(schedule))
    ax.set(xscale="log", yscale="log", xlabel=f"sampling steps ({SAMPLER})", ylabel="FID (classifier features)")
    ax.set_xticks(steps, [str(k) for k in steps])
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("FID vs sampling steps, mean ± std over seeds")
    _savefig(fig, path)


def plot_gaps(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Per level: J_theta - J* (x0 units, log scale) and the gap ratio (J_theta - J*)/J_theta, mean ± std over
    seeds, one line per arm; J* itself as a dashed reference in the first panel."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    jstar, floor = None, np.inf
    for schedule, rs in runs.items():
        if not any(r["gap"] for r in rs):
            continue
        for ax, key in ((a1, "gap_x0"), (a2, "gap_ratio")):
            s, m, sd = gap_curves(rs, key)
            floor = min(floor, m[m > 0].min(initial=np.inf)) if key == "gap_x0" else floor
            (line,) = ax.plot(s, m, "o-", ms=3, label=schedule, lw=_width(schedule))
            ax.fill_between(s, np.maximum(m - sd, m * 1e-3 if key == "gap_x0" else 0), m + sd,
                            color=line.get_color(), alpha=0.15)  # fmt: skip
        jstar = gap_curves(rs, "optimal_x0_mse")[:2]
    if jstar is not None:
        a1.plot(*jstar, "k--", lw=1, label="J* (optimal loss)")
    a1.set(xscale="log", yscale="log", xlabel="noise-to-signal ratio s = σ/α", ylabel="J_θ − J* (x0 MSE per dim)")
    if np.isfinite(floor):
        a1.set_ylim(bottom=0.1 * floor)  # J* is 0 (to rounding) at small s: keep it from squashing the axis
    a2.set(xscale="log", ylim=(0, 1.02), xlabel="noise-to-signal ratio s = σ/α", ylabel="gap ratio (J_θ − J*)/J_θ")
    for ax in (a1, a2):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("Final EMA models against the optimal loss (diffloss diagnose), mean ± std over seeds", fontsize=9)
    _savefig(fig, path)


def plot_optimal(rs: list[dict[str, Any]], path: Path) -> None:
    """The optimal density at the end of training, one line per arm (mean over its seeds): the weight on the x0
    MSE, the level density p(lambda) and the tracked J_theta against J* (the table's, dashed), per log-SNR."""
    plt = pyplot()
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(15, 4.2))
    arms: dict[str, list[dict[str, Any]]] = {}
    for r in rs:
        arms.setdefault(r["schedule"], []).append(r["density"])
    for arm, tables in arms.items():
        lam = np.array(tables[0]["logsnr"])
        mean = {k: np.mean([t[k] for t in tables], axis=0) for k in ("density", "jtheta_x0")}
        (line,) = a1.plot(lam, tables[0]["weight_x0"], lw=_width(arm), label=arm)
        a2.step(lam, mean["density"], where="mid", lw=1, color=line.get_color(), label=f"{arm} ({len(tables)} seeds)")
        a3.plot(lam, mean["jtheta_x0"], marker="o", ms=2, lw=1, color=line.get_color(), label=arm)
    a3.plot(lam, tables[0]["jstar_x0"], "k--", label="J* (the table's floor)")
    a1.set(yscale="log", xlabel="log-SNR λ", ylabel="w on the x0 MSE", title="weight w(λ)")
    a2.set(xlabel="log-SNR λ", ylabel="p(λ) per unit λ", title="final level density p ∝ w (J_θ − J*) + 5% uniform")
    a3.set(yscale="log", xlabel="log-SNR λ", ylabel="x0 MSE per dim", title="tracked J_θ (EMA, mean over seeds)")
    for ax in (a1, a2, a3):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    _savefig(fig, path)


def csv_rows(finished: dict[str, list[dict[str, Any]]], steps: Sequence[int]) -> str:
    columns = ["schedule", "seed", "sampler", "nsteps", "fid", "kid", "train_cpu_s", "train_wall_s"]
    rows = [
        [
            schedule,
            r["seed"],
            SAMPLER,
            k,
            r["fid"][k],
            r["kid"][k],
            *(r["timing"].get("train", {}).get(t) for t in ("cpu", "wall")),
        ]
        for schedule, rs in finished.items()
        for r in rs
        for k in steps
    ]
    return csv_text(columns, rows)


def cpu_minutes(runs: dict[str, list[dict[str, Any]]], key: str | None = None) -> float:
    """CPU minutes of all finished runs (of one ``timing.jsonl`` key, or of every key); resumed parts add up."""
    return sum(v["cpu"] for rs in runs.values() for r in rs for k, v in r["timing"].items() if key in (None, k)) / 60


def verdict_lines(stats: Stats, steps: Sequence[int]) -> list[str]:
    """Table rows: every arm with baselines against each of them that has finished seeds, at every step count."""
    rows = []
    for arm in (a for a in stats if ARMS[a].baselines):
        for base in (b for b in ARMS[arm].baselines if b in stats):
            for k in steps:
                change, word = compare(stats[base][k], stats[arm][k])
                cells = f"{fmt(stats[base][k])} | {fmt(stats[arm][k])} | {change:+.0f}% | {word}"
                rows.append(f"| {arm} | {base} | {k} | {cells} |")
    return rows


HEADLINE = ("optimal", "edm-optimal", "fm-optimal")  # the optimal schedule on each network: the paper's claim


def claim(stats: Stats, steps: Sequence[int]) -> str:
    """One paragraph: does the optimal schedule beat its network's own schedule(s) (paper: -2% to -25%) at each
    step count?"""
    out = []
    for arm in (a for a in HEADLINE if a in stats):
        bases = [b for b in ARMS[arm].baselines if b in stats]
        if len(bases) < len(ARMS[arm].baselines):
            out.append(f"{arm}: not decidable yet (not every baseline has finished seeds)")
            continue
        for k in steps:
            best = min(bases, key=lambda b: stats[b][k][0])
            change, word = compare(stats[best][k], stats[arm][k])
            words = [compare(stats[b][k], stats[arm][k])[1] for b in bases]
            out.append(
                f"{arm} at {k} steps: {fmt(stats[arm][k])} vs best baseline {best} {fmt(stats[best][k])} "
                f"({change:+.0f}%, {word}); better than {words.count('arm better')} of {len(bases)}, worse than "
                f"{words.count('arm worse')}"
            )
    return ("; ".join(out) + ".") if out else "**Not decidable yet (no optimal arm has finished seeds).**"


def setup_lines(preset: Preset, schedules: Sequence[str]) -> list[str]:
    """The report's setup paragraph and the table of arms."""
    cond = (
        f"class-conditional (label dropout {LABEL_DROPOUT}; sampled class by class, guidance 1)"
        if preset.conditional
        else "unconditional"
    )
    return [
        f"Data: {DATA_TEXT.get(preset.data, preset.data)}; {cond}. UNet `tiny` with {preset.channels} base channels; "
        f"AdamW lr {preset.lr} (linear warm-up {preset.warmup}), EMA {preset.ema_decay}, gradient-norm clip "
        f"{preset.grad_clip or 'off'}; {preset.steps} updates of batch {preset.batch} for every arm (equal training "
        f"compute: {preset.steps * preset.batch} denoiser evaluations per run); seeds {list(preset.seeds)}. Each "
        f"final EMA model: {preset.n_samples} samples with {SAMPLER} (Karras rho = 7, starting noise seed "
        f"{SAMPLE_SEED}, the same for every run) at {', '.join(map(str, preset.sampling_steps))} steps; FID and KID "
        "in the features of the data's own classifier against the whole training set (not comparable with "
        "Inception FIDs; biased upwards at small n, so compare at equal n only); `diffloss diagnose` at "
        f"{preset.levels} log-spaced levels s ∈ [0.002, 80] with {preset.queries} queries each"
        + (" (each query's class given, against the conditional J*)." if preset.conditional else "."),
        "",
        "| arm | network: process, target, preconditioning | `--weighting` | `--density` | compared with |",
        "|---|---|---|---|---|",
        *(
            f"| {s} | {ARMS[s].network}: {', '.join(NETWORKS[ARMS[s].network])} | `{ARMS[s].weighting}` | "
            f"`{ARMS[s].density}` | {', '.join(ARMS[s].baselines) or '—'} |"
            for s in schedules
        ),
    ]


def gap_table(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per level: J* and every arm's J_theta - J* (x0 MSE per dimension, mean ± std over seeds)."""
    arms = [s for s, rs in runs.items() if any(r["gap"] for r in rs)]
    if not arms:
        return []
    s_axis, jstar, _ = gap_curves(runs[arms[0]], "optimal_x0_mse")
    curves = {s: gap_curves(runs[s], "gap_x0") for s in arms}
    seeds = {s: sum(1 for r in runs[s] if r["gap"]) for s in arms}
    lines = ["| s | J* | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for i, sv in enumerate(s_axis):
        cells = (Stat(curves[s][1][i], curves[s][2][i], seeds[s]).text(".3g", ".1g", show_n=False) for s in arms)
        lines.append(f"| {sv:.3g} | {jstar[i]:.3g} | " + " | ".join(cells) + " |")
    return lines


def write_report(out: Path, preset: Preset, schedules: Sequence[str], command: str, report: Path) -> None:
    others = [s for s in preset.arms if s not in schedules]
    runs = collect(out, preset, [*schedules, *others])  # + finished arms not asked for this time
    schedules = list(runs)
    steps = preset.sampling_steps
    stats, kid_stats = fid_stats(runs, steps), fid_stats(runs, steps, "kid")
    done, total = sum(len(rs) for rs in runs.values()), len(preset.arms) * len(preset.seeds)
    stem = report.with_suffix("")
    figs = []
    if runs:
        plot_fid(stats, steps, stem.with_name(stem.name + "_fid.png"))
        plot_gaps({s: rs for s, rs in runs.items() if s not in ABLATIONS}, stem.with_name(stem.name + "_gap.png"))
        figs += [stem.name + "_fid.png", stem.name + "_gap.png"]
        opt = [r | {"schedule": s} for s in schedules if ARMS[s].optimal_density for r in runs[s] if r["density"]]
        if opt:
            plot_optimal(opt, stem.with_name(stem.name + "_optimal.png"))
            figs.append(stem.name + "_optimal.png")
    summary = {
        "preset": asdict(preset),
        "networks": NETWORKS,
        "arms": {s: asdict(ARMS[s]) for s in schedules},
        "sampler": SAMPLER,
        "sample_seed": SAMPLE_SEED,
        "fid": {s: {str(k): v for k, v in st.items()} for s, st in stats.items()},
        "kid": {s: {str(k): v for k, v in st.items()} for s, st in kid_stats.items()},
        "gap": {
            s: {
                key: [c.tolist() for c in gap_curves(rs, key)]
                for key in ("gap_x0", "gap_ratio", "model_x0_mse", "optimal_x0_mse")
            }
            for s, rs in runs.items()
            if any(r["gap"] for r in rs)
        },  # fmt: skip
        "cpu_minutes": {"total": cpu_minutes(runs), "train": cpu_minutes(runs, "train")},
        "runs_finished": done,
        "runs_total": total,
    }
    partial = f"{done} of {total} runs finished; the tables hold what was done" if done < total else None
    label = report_status(preset.name, partial)
    train_cpu = [r["timing"]["train"]["cpu"] for rs in runs.values() for r in rs if "train" in r["timing"]]
    lines = [
        f"# Optimal-loss-based training schedule — preset `{preset.name}`",
        "",
        *([label, ""] if label else []),
        "Command (one command, resumable; every finished output is skipped; several copies may run at once):",
        "",
        f"    {command}",
        "",
        "## Setup",
        "",
        *setup_lines(preset, schedules),
        "",
        f"Runtime: {cpu_minutes(runs):.1f} CPU minutes for the {done} finished runs at 1 thread (training "
        f"{cpu_minutes(runs, 'train'):.1f}; "
        + (f"{min(train_cpu):.0f}–{max(train_cpu):.0f} CPU s per training run; " if train_cpu else "")
        + "sampling, FID and diagnosis the rest; the per-run `timing.jsonl` has wall and CPU seconds of each part). "
        "The J* table of the optimal weight and density (exact estimator, 32 levels) is computed once and cached.",
        "",
        "## FID vs sampling steps (mean ± std over seeds)",
        "",
        "| arm | " + " | ".join(f"FID @ {k}" for k in steps) + " | " + " | ".join(f"KID @ {k}" for k in steps)
        + " | seeds |",
        "|---|" + "---|" * (2 * len(steps) + 1),
        *(
            f"| {s} | " + " | ".join(fmt(stats[s][k]) for k in steps) + " | "
            + " | ".join(fmt(kid_stats[s][k]) for k in steps) + f" | {len(runs[s])} |"
            for s in schedules
        ),
        "",
        *(f"![{f}]({f})" for f in figs[:1]),
        "",
        "## Each arm against its baselines, and the paper's claim",
        "",
        f"Paper: {PAPER}. Here: " + claim(stats, steps),
        "",
        "| arm | baseline | steps | baseline FID | arm's FID | change | verdict |",
        "|---|---|---|---|---|---|---|",
        *verdict_lines(stats, steps),
        "",
        "A difference counts only when the two means differ by more than the larger seed standard deviation.",
        "",
        "## Per-level gap to the optimal loss of the final models",
        "",
        "J_θ − J* in x0 units (estimated by E‖x̂0 − m‖²/D on common draws) and the gap ratio (J_θ − J*)/J_θ, mean over "
        "seeds (the plot leaves out the ablations and the sweep); the table gives the gap at each level (x0 MSE per "
        "dimension) for every arm.",
        "",
        *gap_table(runs),
        "",
        *(f"![{f}]({f})" for f in figs[1:]),
        "",
    ]  # fmt: skip
    csv_name, json_name = report.with_suffix(".csv").name, report.with_suffix(".json").name
    links = f"Per-run numbers: [{csv_name}]({csv_name}), summary: [{json_name}]({json_name})."
    lines += [keep_notes(report), "", links, ""]
    write_files(report, "\n".join(lines), table=csv_rows(runs, steps), data=summary)


def main(argv: Sequence[str] | None = None) -> int:
    ap = experiment_parser(__doc__, "schedule", PRESETS, REPORTS, runs_option="--out", preset_default=MAIN_PRESET)
    ap.add_argument(
        "--schedules", default=None, help=f"comma-separated arms (default: the preset's), of: {', '.join(ARMS)}"
    )
    args = parse_experiment_args(ap, argv)
    preset = PRESETS[args.preset]
    schedules = [s.strip() for s in args.schedules.split(",") if s.strip()] if args.schedules else list(preset.arms)
    unknown = sorted(set(schedules) - set(ARMS))
    if unknown:
        raise DifflossError(f"unknown schedule(s) {unknown}; choose from {', '.join(ARMS)}")
    report = report_path(args, REPORTS, "schedule", MAIN_PRESET)
    command = f"OMP_NUM_THREADS=1 PYTHONPATH=src python experiments/schedule.py --preset {preset.name} --out {args.out}"

    if not args.report_only:
        evaluator = CheckpointEvaluator(preset.data, args.device)
        configs = {s: train_config(preset, s) for s in schedules}
        first = [s for s in schedules if s not in ABLATIONS]  # the comparison before the ablations and the sweep
        cells = [(s, seed) for group in (first, [s for s in schedules if s in ABLATIONS])
                 for seed in preset.seeds for s in group]  # fmt: skip  # seed-major: a partial run compares all
        grid(args.out, preset).run(cells, partial(run_one, preset, configs, evaluator, device=args.device))
    write_report(args.out, preset, schedules, command, report)
    log(f"wrote {report}")
    return 0


if __name__ == "__main__":
    run_cli(main)
