"""Scaling law on the reducible loss (Xu et al., arXiv 2506.13763): does the training objective's loss follow a
power law in training compute more closely once its optimal value J* is subtracted?

Five sizes of the project's UNet (preset ``tiny`` with base widths ``channels``) are trained on the same data
(main preset ``mnist14``: MNIST's 50k training images 2x2 mean-pooled to 14x14) with one objective, optimizer and
batch (``diffloss.train``), once per training seed (``--seeds``; the seed sets init, data order and noise). The
objective is EDM's recipe (Karras et al. 2022; ``diffloss train --process edm``): x0 target with EDM's
preconditioning, weight w_x0 = (s^2 + sd^2) / (s sd)^2, ln s ~ N(-1.2, 1.2^2) on [0.002, 80].

J and J* are *the objective's totals*: the expected per-sample loss E_{lambda ~ p}[w_x0(lambda) J_x0(lambda)] over
the objective's own level density p and weight (``diffloss.optimal.floor.objective_floor``; per-dimension means,
the units of the loss ``diffloss train`` logs). At every step of ``checkpoints`` the EMA weights are diagnosed
(``diffloss.diagnose``) on the training data at the 17 Clenshaw-Curtis nodes that ``objective_floor`` puts in the
density's quantile coordinate u = F(lambda), with ``queries`` (x0, eps) draws of seed ``eval_seed``, the same for
every node, size, checkpoint and seed (common random numbers; the posterior means are computed once). Per node
that gives the model's x0-MSE J_x0, the exact J*_x0 (posterior over all N rows, float64) and the gap J_x0 - J*_x0
(E||x_hat - m||^2 / D: unbiased, >= 0); ``objective_floor`` with exactly those 17 nodes turns each into its total
(J, J*, J - J*), with the Monte Carlo standard error (an upper bound) and its quadrature-error estimate
|Q_16 - Q_8|. J* is checked once against ``objective_floor`` on the data's own estimator (independent draws,
nodes refined until converged; ``ROOT/jstar_reference.json``).

Training compute F = 3 x (forward FLOPs per sample, counted by ``torch.utils.flop_counter``: 2 FLOPs per
multiply-add of convolutions and matmuls) x samples seen (batch x step); 6 x params x samples is reported too
(for these UNets forward FLOPs / params is the same within 1% for every size, so either proxy gives the same
fits). Fits (``diffloss.scaling``): log J = log beta + alpha log F; log(J - J*) likewise; J = beta F^alpha + c
with c free; each on the compute-efficient frontier of all checkpoints (primary) and on the final point per
size; with the log-log correlation rho, R^2 and the relative error of extrapolating the largest size's final J
from a fit that leaves that size out. Single nodes are fitted too (x0 units). Every fit is made per seed; the
report gives mean +- std over seeds.

Each (size, seed) trains in ROOT/runs/cC-sK (bit-exact resume); each diagnosis is one JSON
ROOT/runs/cC-sK/eval/STEP.json, and a finished one is skipped, so the command resumes where it stopped (seed by
seed, seed-major: a partial run has whole seeds). ``--report-only`` just rewrites the report
(reports/scaling_law.md for ``mnist14``, reports/scaling_law_PRESET.md otherwise, with .csv, .json and .png).
Presets: ``smoke`` (a minute; checks the pipeline), ``mnist14`` (the main one: 3 seeds, 33 CPU min measured at one
thread; the report states the measured runtime) and ``gpu`` (28x28 MNIST, wider UNets and longer training, sized
for one GPU; not run here). The earlier runs on sklearn digits (total = an unweighted mean over 8 levels, not the
objective) are kept in reports/scaling_law_digits.md, made by this script's version of commit 6fa669b. Hand-written
text between the markers ``NOTES_BEGIN`` and ``NOTES_END`` of an existing report is kept (``diffloss.runs.keep_notes``).

Run: PYTHONPATH=src python experiments/scaling_law.py --preset mnist14 --root /work/runs/scaling --seeds 0,1,2
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np

from diffloss import runs
from diffloss.errors import DifflossError
from diffloss.io import write_json_atomic
from diffloss.optimal.floor import FIRST_NODES, JStar, clenshaw_curtis, density_quantiles, objective_floor
from diffloss.runs import Grid, Stat, cell_key, csv_text, keep_notes, log, mean_std, run_cli
from diffloss.scaling import PowerLawFit, extrapolate, frontier, log_log_fit, offset_fit

REPORTS = Path(__file__).resolve().parent.parent / "reports"
MAIN_PRESET = "mnist14"
PAPER = (
    'Xu et al. (arXiv 2506.13763, abstract): "using models with 120M to 1.5B parameters, we find that the power '
    'law is better demonstrated after subtracting the optimal loss from the actual training loss"'
)
REFERENCE_MAX_NODES = 64  # the J* check: objective_floor refines its nodes up to this many


@dataclass(frozen=True)
class Preset:
    """The size of the experiment: UNet base widths, training steps at which to diagnose, (x0, eps) queries per
    diagnosis, the training seeds (init, data order and noise; the diagnosis draws use ``eval_seed`` for every
    seed), the objective (``diffloss train``'s process, target, weighting, density and preconditioning specs),
    the optimizer's settings (the device is the harness's ``--device``). The levels are the 17 nodes of
    ``objective_floor``'s first rule; ``single`` are the indices (in increasing s) of three nodes (low, mid, high
    noise) fitted on their own."""

    name: str
    channels: tuple[int, ...]
    checkpoints: tuple[int, ...]
    queries: int
    seeds: tuple[int, ...]
    data: str = "mnist14"
    process: str = "edm"
    target: str = "x0"
    weighting: str = "edm:sigma_data=0.5"
    density: str = "default"
    precond: str = "edm"
    batch: int = 64
    lr: float = 1e-3
    warmup: int = 25
    ema_decay: float = 0.98
    eval_seed: int = 0
    single: tuple[int, int, int] = (3, 8, 14)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("smoke", (8, 16, 24), (4, 8), 32, (0, 1), warmup=2),
        Preset("mnist14", (8, 16, 24, 32, 40), (64, 100, 160, 250, 400), 256, (0, 1, 2)),
        Preset(
            "gpu",
            (32, 48, 64, 96, 128),
            (1000, 1600, 2500, 4000, 6300, 10000),
            2048,
            (0, 1, 2),
            data="mnist",
            batch=128,
            lr=5e-4,
            warmup=200,
            ema_decay=0.999,
        ),  # fmt: skip
    )
}


def run_name(channels: int, seed: int) -> str:
    return cell_key({"c": channels, "s": seed}, "c{c}-s{s}")


def eval_path(root: Path, channels: int, seed: int, step: int) -> Path:
    return root / "runs" / run_name(channels, seed) / "eval" / f"{step}.json"


def grid(root: Path, preset: Preset) -> Grid[tuple[int, int]]:
    """The (channels, seed) runs under ROOT/runs; a run is finished when every checkpoint step is diagnosed."""
    return Grid(
        root / "runs",
        key=lambda c: run_name(*c),
        finished=lambda c, d: all(eval_path(root, *c, step).exists() for step in preset.checkpoints),
        timing=root / runs.TIMING_FILE,
    )


# ---- the objective and its totals ----------------------------------------------------------------------------


@cache
def setting(preset: Preset):
    """(objective, process, dataset) of the preset (``diffloss.objective.build_objective``, as ``diffloss train``)."""
    from diffloss.data import load_dataset
    from diffloss.objective import build_objective
    from diffloss.process import get_process

    proc, ds = get_process(preset.process), load_dataset(preset.data)
    return build_objective(preset.target, preset.weighting, preset.density, proc, ds), proc, ds


def quadrature_levels(objective, process) -> np.ndarray:
    """The noise-to-signal ratios s = exp(-lambda / 2), increasing, of the nodes of ``objective_floor``'s first
    Clenshaw-Curtis rule (``FIRST_NODES`` + 1 nodes in the density's quantile coordinate)."""
    lam = density_quantiles(objective, process, clenshaw_curtis(FIRST_NODES)[0])
    return np.sort(np.exp(-lam / 2))


def node_curve(sigmas: np.ndarray, values: Sequence[float], stderr: Sequence[float]) -> JStar:
    """``objective_floor``'s curve from ``values`` (x0 units, per dimension) measured at exactly the levels
    ``sigmas``: a level that is not one of them is an error (no interpolation)."""
    log_s, values, stderr = np.log(sigmas), np.asarray(values, dtype=np.float64), np.asarray(stderr, dtype=np.float64)

    def curve(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        dist = np.abs(np.log(s)[:, None] - log_s[None])
        k = dist.argmin(1)
        if dist[np.arange(len(s)), k].max() > 1e-9:
            raise DifflossError("objective_floor asked for a level that was not diagnosed; diagnose at its nodes")
        return values[k], stderr[k], np.full(len(s), math.nan)

    return curve


TOTALS = {"J": "model_x0", "Jstar": "optimal_x0", "gap": "gap_x0"}


def objective_totals(objective, process, levels: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The objective's totals of the model's loss J, of J* and of the gap J - J* from their per-node values
    (``levels``: ``sigma`` and the x0-unit ``model_x0``, ``optimal_x0``, ``gap_x0`` with ``*_se``), each with its
    standard error (an upper bound: the nodes share their draws) and quadrature-error estimate."""
    sigmas = np.asarray(levels["sigma"])
    out = {}
    for name, key in TOTALS.items():
        curve = node_curve(sigmas, levels[key], levels[key + "_se"])
        fl = objective_floor(objective, process, curve, max_nodes=FIRST_NODES)
        out[name] = {"total": fl.total, "stderr": fl.stderr, "quadrature_error": fl.quadrature_error}
    return out


def evaluate(
    model, x: np.ndarray, objective, process, *, queries: int, seed: int, posterior: dict | None = None,
    device: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Per-node J_x0, J*_x0, gap (x0 units, per dimension, with standard errors) of ``model`` (a
    ``diffloss.loader.DiffusionModel``) on data ``x`` at the objective's quadrature levels, and the objective's
    totals (``objective_totals``). ``posterior``: ``diagnose``'s cache of posterior means (one per ``x``)."""
    import torch

    from diffloss.diagnose import diagnose
    from diffloss.levels import Levels

    sigmas = quadrature_levels(objective, process)
    levels = Levels.from_logsnr(process, torch.from_numpy(-2 * np.log(sigmas)))
    d = diagnose(model, x, levels, queries=queries, seed=seed, posterior=posterior, device=device)
    if d.warning():
        raise DifflossError(d.warning())
    keys = ("model_x0", "model_x0_se", "optimal_x0", "optimal_x0_se", "gap_x0", "gap_x0_se")
    out: dict[str, Any] = {"sigma": sigmas.tolist(), **{k: getattr(d, k).tolist() for k in keys}}
    return out | {"total": objective_totals(objective, process, out)}


def reference_jstar(root: Path, preset: Preset) -> dict[str, Any]:
    """J* of the objective by ``objective_floor`` on the data's own exact estimator (``data_jstar``: draws of seed
    ``eval_seed + 1``, independent of the diagnoses; nodes refined up to ``REFERENCE_MAX_NODES``), computed once
    into ROOT/jstar_reference.json."""
    from diffloss.optimal import data_jstar

    path = root / "jstar_reference.json"
    if path.exists():
        return runs.read_json(path)
    objective, proc, ds = setting(preset)
    cpu = time.process_time()
    jstar = data_jstar(ds, queries=preset.queries, seed=preset.eval_seed + 1, threads=1, cache=False)
    fl = objective_floor(objective, proc, jstar, max_nodes=REFERENCE_MAX_NODES)
    record = fl.to_dict() | {"queries": preset.queries, "seed": preset.eval_seed + 1}
    record |= {"cpu_seconds": time.process_time() - cpu}
    write_json_atomic(path, record)
    return record


# ---- training and diagnosis (the slow part) ------------------------------------------------------------------


def train_config(preset: Preset, channels: int, seed: int, steps: int):
    """The ``TrainConfig`` of one size and seed, trained up to ``steps`` (the only field that changes between
    stops)."""
    from diffloss.train import TrainConfig

    objective, proc, _ = setting(preset)
    return TrainConfig(
        data=preset.data,
        process=proc.to_dict(),
        target=objective.target.name,
        weighting=objective.weighting.to_dict(),
        density=objective.density.to_dict(),
        backbone={"name": "unet", "preset": "tiny", "channels": channels},
        steps=steps,
        batch=preset.batch,
        seed=seed,
        lr=preset.lr,
        warmup=preset.warmup,
        ema_decay=preset.ema_decay,
        precond=preset.precond,
        ckpt_every=max(preset.checkpoints),
        log_every=max(1, min(preset.checkpoints) // 4),
    )


def model_cost(preset: Preset, channels: int) -> dict[str, float]:
    """Parameters and forward FLOPs per sample of one size (the Denoiser as trained, batch of 16 samples)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from diffloss.models import Denoiser

    objective, proc, ds = setting(preset)
    backbone = {"name": "unet", "preset": "tiny", "channels": channels}
    model = Denoiser(backbone, ds.shape, proc, precond=preset.precond, target=objective.target)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(16, *ds.shape), torch.full((16,), 0.5))
    return {"params": sum(p.numel() for p in model.parameters()), "fwd_flops": counter.get_total_flops() / 16}


def run_size(preset: Preset, root: Path, posterior: dict, cell: tuple[int, int], run_dir: Path, device=None) -> None:
    """Train one (size, seed) in ``run_dir`` through every checkpoint step on ``device`` (None: the CPU), evaluating
    each (finished evaluations are skipped); ``posterior`` is ``diagnose``'s cache of posterior means, shared by
    every run."""
    from diffloss.loader import load_trained

    channels, seed = cell
    todo = [step for step in preset.checkpoints if not eval_path(root, channels, seed, step).exists()]
    if not todo:
        return
    cost = model_cost(preset, channels)
    objective, proc, ds = setting(preset)
    for step in todo:
        train_cpu = runs.train_to(train_config(preset, channels, seed, step), run_dir, device)
        cpu = time.process_time()
        record = {"channels": channels, "seed": seed, "step": step, **cost, "samples": step * preset.batch}
        record |= evaluate(
            load_trained(run_dir), ds.x, objective, proc, queries=preset.queries, seed=preset.eval_seed,
            posterior=posterior, device=device,
        )  # fmt: skip
        record |= {"train_cpu_seconds": train_cpu, "eval_cpu_seconds": time.process_time() - cpu}
        write_json_atomic(eval_path(root, channels, seed, step), record)
        log(f"{run_name(channels, seed)} step {step}: J {total(record)[0]:.4g} (train {train_cpu:.0f} s CPU)")


# ---- the data of the fits ------------------------------------------------------------------------------------


def compute(record: dict[str, Any]) -> float:
    """Training compute F in FLOPs: 3 x forward FLOPs per sample x samples seen (backward ~ 2 x forward)."""
    return 3.0 * record["fwd_flops"] * record["samples"]


def total(record: dict[str, Any]) -> tuple[float, float, float]:
    """(J, J*, J - J*) as the objective's totals (per-dimension loss in the units ``diffloss train`` logs)."""
    return tuple(float(record["total"][k]["total"]) for k in TOTALS)


def level(record: dict[str, Any], k: int) -> tuple[float, float, float]:
    """(J, J*, J - J*) at level index k, in x0 units."""
    return tuple(float(record[key][k]) for key in ("model_x0", "optimal_x0", "gap_x0"))


def collect(root: Path, preset: Preset) -> list[dict[str, Any]]:
    """Every finished diagnosis under ``root`` of the preset's grid of seeds x sizes x steps (missing ones are
    left out), in that order."""
    return runs.collect(
        (eval_path(root, c, seed, step), {"seed": seed})
        for seed in preset.seeds
        for c in preset.channels
        for step in preset.checkpoints
    )


@dataclass(frozen=True)
class Series:
    """One quantity over all diagnoses: per point its size (channels), compute F, J, J* and J - J*."""

    name: str
    size: np.ndarray
    f: np.ndarray
    j: np.ndarray
    jstar: np.ndarray
    gap: np.ndarray

    def subset(self, mask: np.ndarray) -> Series:
        return Series(self.name, *(v[mask] for v in (self.size, self.f, self.j, self.jstar, self.gap)))


def series(rows: Sequence[dict[str, Any]], name: str, pick) -> Series:
    """``pick(record) -> (J, J*, J - J*)`` of every row as a ``Series``."""
    vals = np.array([pick(r) for r in rows], dtype=np.float64).reshape(-1, 3)
    size = np.array([r["channels"] for r in rows])
    f = np.array([compute(r) for r in rows])
    return Series(name, size, f, vals[:, 0], vals[:, 1], vals[:, 2])


def selection(s: Series, mode: str) -> np.ndarray:
    """Boolean mask of the points a fit uses: ``frontier`` (compute-efficient frontier of J over all points)
    or ``final`` (the last diagnosed point of each size)."""
    if mode == "frontier":
        mask = np.zeros(len(s.f), dtype=bool)
        mask[frontier(s.f, s.j)] = True
        return mask
    last = {c: s.f[s.size == c].max() for c in np.unique(s.size)}
    return np.array([f == last[c] for c, f in zip(s.size, s.f)])


FITS = ("raw", "reducible", "offset")


def fit_all(s: Series, mode: str) -> dict[str, dict[str, Any]]:
    """The three fits of one series on the points of ``mode``, each with its extrapolation to the largest size
    (the fit redone without that size, predicting its final J; relative errors of J and of J - J*)."""
    largest = s.size.max()
    pts = s.subset(selection(s, mode))
    others = s.subset(s.size != largest)
    others = others.subset(selection(others, mode))
    last = s.subset((s.size == largest) & (s.f == s.f[s.size == largest].max()))
    target_j, target_star = float(last.j[0]), float(last.jstar[0])
    target_gap = float(last.gap[0])
    out = {}
    for kind in FITS:
        fit, fit_out = _fit(kind, pts), _fit(kind, others)
        pred = None
        if fit_out is not None:
            pred = extrapolate(fit_out, float(last.f[0])) + (target_star if kind == "reducible" else 0.0)
        out[kind] = {
            **(asdict(fit) if fit is not None else {}),
            "n_points": int(len(pts.f)),
            "extrapolated_j": pred,
            "observed_j": target_j,
            "rel_err_j": None if pred is None else pred / target_j - 1,
            "rel_err_reducible": None if pred is None else (pred - target_star) / target_gap - 1,
        }
    return out


def _fit(kind: str, s: Series) -> PowerLawFit | None:
    if len(s.f) < 3:
        return None
    if kind == "raw":
        return log_log_fit(s.f, s.j)
    if kind == "reducible":
        return log_log_fit(s.f, s.gap)
    return offset_fit(s.f, s.j)


# ---- the report ----------------------------------------------------------------------------------------------


def all_series(rows: Sequence[dict[str, Any]], preset: Preset) -> list[Series]:
    """The total and every single level, in that order."""
    out = [series(rows, "total", total)]
    for k, s in enumerate(rows[0]["sigma"]):
        out.append(series(rows, f"s = {s:.3g}", lambda r, k=k: level(r, k)))
    return out


def csv_text_of(rows: Sequence[dict[str, Any]], preset: Preset) -> str:
    """One line per diagnosis and level (and the objective's total): seed, size, compute, J, J*, J - J* with
    standard errors (the total's: an upper bound, its nodes share their draws) and the total's quadrature-error
    estimates."""
    cols = ["seed", "channels", "params", "fwd_flops", "step", "samples", "compute", "level", "sigma"]
    cols += ["J", "J_se", "Jstar", "Jstar_se", "reducible", "reducible_se", "J_quad_err", "reducible_quad_err"]
    cols += ["units"]
    lines = []
    for r in rows:
        head = [r["seed"], r["channels"], r["params"], r["fwd_flops"], r["step"], r["samples"], compute(r)]
        tot = r["total"]
        vals = [tot[k][m] for k in TOTALS for m in ("total", "stderr")]
        errs = [tot[k]["quadrature_error"] for k in ("J", "gap")]
        lines.append([*head, "total", "", *vals, *errs, f"objective total ({preset.weighting}-weighted)"])
        for k, sig in enumerate(r["sigma"]):
            vals = [r[m][k] for key in TOTALS.values() for m in (key, key + "_se")]
            lines.append([*head, k, sig, *vals, "", "", "x0-MSE"])
    return csv_text(cols, lines)


MODES = ("frontier", "final")
FLOOR_MULTIPLES = (0.0, 0.5, 1.0, 2.0, 3.0)


def floor_sweep(s: Series, mode: str) -> dict[float, float | None]:
    """|rho| of (log F, log(J - k J*)) on the points of ``mode`` for each multiple k of ``FLOOR_MULTIPLES``: does
    subtracting J* straighten the curve more than subtracting any other constant would? (None where some
    J - k J* <= 0.)"""
    pts = s.subset(selection(s, mode))
    out = {}
    for k in FLOOR_MULTIPLES:
        y = pts.j - k * pts.jstar
        out[k] = abs(log_log_fit(pts.f, y).rho) if len(y) >= 3 and np.all(y > 0) else None
    return out


def paired(per_seed: Sequence[dict[str, Any]], metric: str) -> Stat:
    """Mean ± std over seeds of the per-seed difference reducible − raw of ``metric`` (``abs_rho``, ``r2``, or
    ``abs_err``: |relative extrapolation error of J|) of one series' ``fit_all``; the seeds share their evaluation
    draws, so the difference is the paired comparison."""

    def value(fit: dict[str, Any]) -> float | None:
        if metric == "abs_rho":
            return abs(fit["rho"]) if "rho" in fit else None
        if metric == "abs_err":
            return None if fit.get("rel_err_j") is None else abs(fit["rel_err_j"])
        return fit.get(metric)

    diffs = []
    for f in per_seed:
        a, b = value(f["raw"]), value(f["reducible"])
        if a is not None and b is not None:
            diffs.append(b - a)
    return mean_std(diffs)


METRICS = ("n_points", "alpha", "abs_rho", "r2", "c", "rel_err_j", "rel_err_reducible")


def fit_stats(per_seed: Sequence[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Stat]]:
    """``mean_std`` over seeds of every metric of the three fits of one series (``per_seed``: the ``fit_all`` of
    each seed). ``abs_rho`` is |ρ|; a fit or extrapolation that a seed could not make is left out of the count."""

    def value(fit: dict[str, Any], metric: str) -> float | None:
        if metric == "abs_rho":
            return abs(fit["rho"]) if "rho" in fit else None
        return fit.get(metric)

    return {kind: {m: mean_std([value(f[kind], m) for f in per_seed]) for m in METRICS} for kind in FITS}


def _g(v: float | None, fmt: str = ".3g") -> str:
    return "—" if v is None or not math.isfinite(v) else format(v, fmt)


def _pm(st: Stat, fmt: str = ".3g") -> str:
    """``mean ± std`` of a ``Stat`` (``Stat.text``: "mean (n=1)" for one seed, — for none); for a ``g`` format the
    std has 2 significant digits, else the mean's format."""
    return st.text(fmt, ".2g" if fmt.endswith("g") else fmt, show_n=False)


def _pm_pct(st: Stat) -> str:
    """``mean ± std`` of a relative error in percent (a std below 0.05% with one significant digit)."""
    pct = Stat(100 * st.mean, 100 * st.std, st.n)
    return pct.text("+.1f", ".1f" if st.std >= 5e-4 else ".1g", show_n=False, unit="%")


FIT_LABEL = {"raw": "J = βF^α", "reducible": "J − J* = βF^α", "offset": "J = βF^α + c"}


def fit_rows(name: str, stats: dict[str, dict[str, Stat]]) -> list[str]:
    """Markdown table rows (mean ± std over seeds) of the three fits of one series."""
    out = []
    for kind in FITS:
        st = stats[kind]
        c = _pm(st["c"]) if kind == "offset" else ""
        out.append(
            f"| {name} | {FIT_LABEL[kind]} | {_pm(st['n_points'], '.2g')} | {_pm(st['alpha'])} | "
            f"{_pm(st['abs_rho'], '.3f')} | {_pm(st['r2'], '.3f')} | {c} | {_pm_pct(st['rel_err_j'])} | "
            f"{_pm_pct(st['rel_err_reducible'])} |"
        )
    return out


TABLE_HEAD = [
    "| quantity | fit | points | α | \\|ρ\\| (log-log) | R² (log J) | c | extrap. error of J | of J − J* |",
    "|---|---|---|---|---|---|---|---|---|",
]


def _seed_mean(per_seed: Sequence[Series], s_size: int, attr: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F, mean, std over seeds) of ``attr`` of size ``s_size`` at every compute some seed diagnosed (a
    checkpoint's F is the same for every seed)."""
    groups: dict[float, list[float]] = {}
    for s in per_seed:
        m = s.size == s_size
        for f, y in zip(s.f[m], getattr(s, attr)[m]):
            groups.setdefault(float(f), []).append(float(y))
    f = np.array(sorted(groups))
    stats = [mean_std(groups[v]) for v in f]
    return f, np.array([st[0] for st in stats]), np.nan_to_num(np.array([st[1] for st in stats]))


def plot(
    chosen: Sequence[Sequence[Series]],
    fits: Sequence[dict[str, dict[str, Any]]],
    stats: dict[str, dict[str, dict[str, Stat]]],
    channels: Sequence[int],
    out: Path,
) -> Path:
    """Rows: the series (``chosen[i]``: series i of every seed); columns: J vs F (frontier fits J = βF^α and
    J = βF^α + c, J* dotted) and J − J* vs F (frontier fit). Each size is one colour: its seed mean ± std joined
    over its checkpoints; the fit of every seed (``fits``: per seed, the frontier ``fit_all`` of each series) is
    drawn faint, its legend giving α and |ρ| as mean ± std over seeds (``stats``)."""
    import matplotlib.ticker

    plt = runs.pyplot()
    fig, axes = plt.subplots(len(chosen), 2, figsize=(11, 3.4 * len(chosen)), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(channels)))
    for (ax_raw, ax_red), per_seed in zip(axes, chosen):
        name = per_seed[0].name
        grid = np.geomspace(min(s.f.min() for s in per_seed), max(s.f.max() for s in per_seed), 100)
        for ax, attr, kinds in ((ax_raw, "j", ("raw", "offset")), (ax_red, "gap", ("reducible",))):
            for c, col in zip(channels, colors):
                f, mean, std = _seed_mean(per_seed, c, attr)
                ax.errorbar(f, mean, yerr=std, fmt="-o", color=col, ms=3, lw=1, capsize=2, label=f"c={c}")
            for kind, style in zip(kinds, ("--", ":")):
                st = stats[name][kind]
                label = f"{FIT_LABEL[kind]}: α={_pm(st['alpha'])}, |ρ|={_pm(st['abs_rho'], '.3f')}"
                for fit in (seed_fits[name][kind] for seed_fits in fits):
                    if "alpha" in fit:
                        law = PowerLawFit(**{k: fit[k] for k in ("beta", "alpha", "c", "rho", "r2", "n")})
                        ax.plot(grid, extrapolate(law, grid), "k" + style, lw=1, alpha=0.45, label=label)
                        label = None
            ax.set(xscale="log", yscale="log", xlabel="training compute F (FLOPs)")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.grid(alpha=0.3, which="both")
        jstar = per_seed[0].jstar
        if jstar.max() > 0:
            ax_raw.axhline(float(jstar.mean()), color="gray", ls=":", lw=1, label="J*")
        n = len(per_seed)
        ax_raw.set(ylabel="J", title=f"{name}: loss (mean ± std over {n} seeds)")
        ax_red.set(ylabel="J − J*", title=f"{name}: reducible loss (mean ± std over {n} seeds)")
        ax_raw.legend(fontsize=6)
        ax_red.legend(fontsize=6)
    fig.tight_layout()
    return runs.save_figure(fig, out.with_suffix(".png"), dpi=100)


def runtime_lines(root: Path, by_seed: dict[int, list[dict[str, Any]]]) -> list[str]:
    """A markdown table of the CPU time (``time.process_time`` of the training and of the diagnoses, from the
    diagnosis files) and the wall time from the first to the last diagnosis file, per seed and in total."""
    out = [
        "| seed | diagnoses | training CPU min | diagnosis CPU min | total CPU min | wall min (first to last file) |",
        "|---|---|---|---|---|---|",
    ]
    sums = np.zeros(3)
    for seed, rows in by_seed.items():
        if not rows:
            continue
        train_cpu = sum(r["train_cpu_seconds"] for r in rows) / 60
        eval_cpu = sum(r["eval_cpu_seconds"] for r in rows) / 60
        stamps = [eval_path(root, r["channels"], seed, r["step"]).stat().st_mtime for r in rows]
        sums += (len(rows), train_cpu, eval_cpu)
        out.append(
            f"| {seed} | {len(rows)} | {train_cpu:.1f} | {eval_cpu:.1f} | {train_cpu + eval_cpu:.1f} | "
            f"{(max(stamps) - min(stamps)) / 60:.0f} |"
        )
    out.append(f"| all | {sums[0]:.0f} | {sums[1]:.1f} | {sums[2]:.1f} | {sums[1] + sums[2]:.1f} | |")
    return out


def quadrature_line(rows: Sequence[dict[str, Any]]) -> str:
    """The largest quadrature-error estimate |Q_16 - Q_8| and Monte Carlo standard error (upper bound) of J and of
    J - J*, relative to the value, over every diagnosis."""
    rel = {
        (k, m): max(r["total"][k][m] / r["total"][k]["total"] for r in rows)
        for k in ("J", "gap")
        for m in ("quadrature_error", "stderr")
    }
    return (
        f"Over all {len(rows)} diagnoses, the largest quadrature-error estimate |Q₁₆ − Q₈| is "
        f"{100 * rel['J', 'quadrature_error']:.2g}% of J and {100 * rel['gap', 'quadrature_error']:.2g}% of J − J*; "
        f"the largest Monte Carlo standard error (upper bound) {100 * rel['J', 'stderr']:.2g}% of J and "
        f"{100 * rel['gap', 'stderr']:.2g}% of J − J* (shared by every model: common random numbers)."
    )


def paired_text(fits: dict[int, dict[str, Any]], used: Sequence[int]) -> str:
    """The paired differences (``paired``) of |rho|, R^2 and |extrapolation error| of the total, per mode."""
    out = []
    for mode in MODES:
        per_seed = [fits[s][mode]["total"] for s in used]
        rho, r2 = (paired(per_seed, m).text("+.3f", ".3f", show_n=False) for m in ("abs_rho", "r2"))
        out.append(f"{mode}: Δ|ρ| {rho}, ΔR² {r2}, Δ|extrap. error of J| {_pm_pct(paired(per_seed, 'abs_err'))}")
    return "; ".join(out)


def write_report(root: Path, preset: Preset, command: str, report: Path) -> None:
    rows = collect(root, preset)
    if not rows:
        raise DifflossError(f"no finished diagnoses under {root}; run without --report-only first")
    cells = len(preset.channels) * len(preset.checkpoints)
    by_seed = {seed: [r for r in rows if r["seed"] == seed] for seed in preset.seeds}
    complete = [seed for seed, rs in by_seed.items() if len(rs) == cells]
    used = complete or [seed for seed, rs in by_seed.items() if rs]
    series_of = {seed: all_series(by_seed[seed], preset) for seed in used}
    names = [s.name for s in series_of[used[0]]]
    fits = {seed: {mode: {s.name: fit_all(s, mode) for s in series_of[seed]} for mode in MODES} for seed in used}
    stats = {mode: {name: fit_stats([fits[seed][mode][name] for seed in used]) for name in names} for mode in MODES}
    picked = [0, *(1 + k for k in preset.single)]
    chosen = [names[i] for i in picked]
    costs = {r["channels"]: {k: r[k] for k in ("params", "fwd_flops")} for r in rows}
    stats_json = {
        mode: {n: {k: {m: st.to_json() for m, st in v.items()} for k, v in s.items()} for n, s in by_name.items()}
        for mode, by_name in stats.items()
    }
    summary = {
        "preset": asdict(preset),
        "models": costs,
        "seeds_fitted": used,
        "mean_std_over_seeds": stats_json,
        "fits_per_seed": {str(seed): fits[seed] for seed in used},
    }
    fig = plot(
        [[series_of[seed][i] for seed in used] for i in picked],
        [fits[seed]["frontier"] for seed in used],
        stats["frontier"],
        [c for c in preset.channels if c in costs],
        report,
    )
    partial = None
    if len(complete) < len(preset.seeds):
        partial = (
            f"{len(rows)} of {cells * len(preset.seeds)} diagnoses finished; the fits use "
            f"seed(s) {used}{'' if complete else ' (unfinished)'}"
        )
    label = runs.report_status(preset.name, partial)
    last = preset.checkpoints[-1]
    model_lines = []
    for c in preset.channels:
        if c in costs:
            p, fl = costs[c]["params"], costs[c]["fwd_flops"]
            n = last * preset.batch
            model_lines.append(f"| {c} | {p:,} | {fl:.3g} | {3 * fl * n:.3g} | {6 * p * n:.3g} | {fl / (2 * p):.0f} |")
    n_seeds = f"{len(used)} seed{'s' if len(used) > 1 else ''}"
    ref = reference_jstar(root, preset)
    jstar_nodes = rows[0]["total"]["Jstar"]
    sig = rows[0]["sigma"]
    high = names[1 + preset.single[2]]
    hs, ts = stats["frontier"][high], stats["frontier"]["total"]
    per_seed_total = ", ".join(
        f"seed {seed}: {abs(fits[seed]['frontier']['total']['raw']['rho']):.3f} → "
        f"{abs(fits[seed]['frontier']['total']['reducible']['rho']):.3f}"
        for seed in used
        if "rho" in fits[seed]["frontier"]["total"]["raw"] and "rho" in fits[seed]["frontier"]["total"]["reducible"]
    )
    lines = [
        f"# Scaling law on the reducible loss (Xu et al., arXiv 2506.13763) — preset `{preset.name}`",
        "",
        label,
        "",
        "Command (resumable; finished diagnoses are skipped; `--channels` splits the sizes over processes, which "
        "changes nothing in the results):",
        "",
        f"    {command}",
        "",
        "## Setup",
        "",
        f"- Data: `{preset.data}` ({runs.DATA_TEXT.get(preset.data, preset.data)}).",
        f"- Objective (the training loss, and the J and J* below): process `{preset.process}`, target "
        f"`{preset.target}`, weighting `{preset.weighting}`, density `{preset.density}` (the process's: "
        "ln s ~ N(−1.2, 1.2²) on [0.002, 80]), preconditioning "
        f"`{preset.precond}` — EDM's recipe (Karras et al. 2022; `diffloss train --process edm`). The per-sample "
        "loss is w(σ)·‖D(x + σε) − x‖²/D with w = (σ² + 0.5²)/(0.5σ)², a per-dimension mean.",
        f"- Models: the project's UNet preset `tiny` (diffusers UNet2DModel, 3 levels, widths c·(1, 2, 2)) at base "
        f"widths c = {list(preset.channels)}; everything else the same: AdamW lr {preset.lr} (linear warm-up "
        f"{preset.warmup} updates, then constant), grad-clip 1.0, batch {preset.batch}, EMA decay "
        f"{preset.ema_decay} (the EMA weights are evaluated).",
        f"- Training seeds {list(preset.seeds)} (init, data order and noise); every size is trained once per "
        "seed, and every fit is made per seed: the tables give mean ± sample std (n − 1) over the "
        f"{n_seeds} {used}.",
        f"- J and J* are **the objective's totals**, E over the objective's own level density of w·(x0-MSE) "
        "(`diffloss.optimal.floor.objective_floor`, per dimension, the units of the loss `diffloss train` "
        f"logs). At each checkpoint (training steps {list(preset.checkpoints)}) the EMA weights are diagnosed "
        f"(`diffloss.diagnose`) on the training data at the {len(sig)} Clenshaw–Curtis nodes of "
        "`objective_floor`'s rule in the density's quantile coordinate (s = "
        f"{', '.join(f'{s:.3g}' for s in sig)}), with {preset.queries} (x0, ε) draws of seed {preset.eval_seed}, "
        "the same for every node, size, checkpoint and seed (common random numbers, so J* is the same for every "
        "model). Per node: the model's x0-MSE, the exact J*_x0 (posterior over all N rows, float64) and the gap "
        "E‖x̂0 − m‖²/D (unbiased, ≥ 0); `objective_floor` on exactly these nodes gives the totals J, J* and "
        f"J − J*. J* = {jstar_nodes['total']:.5g} ± {jstar_nodes['stderr']:.2g} (quadrature-error estimate "
        f"{jstar_nodes['quadrature_error']:.2g}). Check: `objective_floor` on the data's own exact estimator "
        f"(`data_jstar`, {ref['queries']} independent draws of seed {ref['seed']}, {ref['nodes']} nodes, "
        f"converged: {ref['converged']}) gives {ref['total']:.5g} ± {ref['stderr']:.2g} (quadrature-error "
        f"estimate {ref['quadrature_error']:.2g}; {ref['cpu_seconds']:.0f} CPU s); the nodes whose J* estimate is "
        f"0 ± 0 (every draw's posterior on its own row: low noise) could add at most {ref['rare_event_bound']:.2g} "
        "(their 95% upper bounds, weighted; `ObjectiveFloor.rare_event_bound`).",
        f"- {quadrature_line(rows)}",
        f"- Single nodes (low, mid, high noise: s = {', '.join(f'{sig[k]:.3g}' for k in preset.single)}) are "
        "fitted too, in x0 units (a per-level factor changes neither ρ, R² nor a relative error).",
        "- Compute F = 3 × forward FLOPs per sample × samples seen (samples = batch × step); forward FLOPs counted "
        "by `torch.utils.flop_counter` (2 per multiply-add of convolutions and matmuls). The usual proxy "
        "6 × params × samples is in the table: for these UNets FLOPs per parameter is the same for every size, so "
        "both give the same fits up to a constant factor in F (which changes neither α, ρ, R² nor an "
        "extrapolation).",
        "",
        f"| c | params | fwd FLOPs / sample | F at step {last} | 6·params·samples | FLOPs per param |",
        "|---|---|---|---|---|---|",
        *model_lines,
        "",
        "Runtime (one process, one thread, `time.process_time`, from the diagnosis files; wall time on the 2-core "
        "machine shared with other jobs):",
        "",
        *runtime_lines(root, by_seed),
        "",
        "## Fits",
        "",
        "Three fits (`diffloss.scaling`), made for every seed: log J = log β + α log F (least squares); "
        "log(J − J*) likewise; J = βF^α + c with c ∈ [0, min J) free (scipy `curve_fit` on log J). |ρ| is the "
        "absolute Pearson correlation of (log F, log(J − c)) with c = 0, J* and the fitted c respectively (ρ < 0: "
        "the loss falls); R² is on log J (on log(J − J*) for the reducible fit). *Extrapolation*: the same fit "
        f"redone without the largest size (c = {max(preset.channels)}), evaluated at that size's final compute, "
        "against its measured final J (relative error of J, and of the reducible part J − J*; the reducible fit "
        "predicts J* + βF^α). Every entry is mean ± std over seeds.",
        "",
        "**Primary: the compute-efficient frontier** (the points whose loss is below that of every point with "
        "less or equal compute, over all sizes and checkpoints of one seed; without the largest size for the "
        "extrapolation). The final point per size (all sizes train the same steps, so F ∝ size there: a law in "
        "model size at fixed data) is reported second.",
        "",
        "### Compute-efficient frontier",
        "",
        *TABLE_HEAD,
        *(line for name in chosen for line in fit_rows(name, stats["frontier"][name])),
        "",
        "### Final point per size",
        "",
        *TABLE_HEAD,
        *(line for name in chosen for line in fit_rows(name, stats["final"][name])),
        "",
        f"![loss and reducible loss vs compute]({fig.name})",
        "",
        "### Every node (frontier)",
        "",
        "J* is the same for every seed; J and (J − J*)/J are of the largest size's final checkpoint. Nodes in x0 "
        "units; the total in the objective's.",
        "",
        "| s | J* | J (largest, final) | (J − J*)/J | \\|ρ\\| raw | \\|ρ\\| reducible | \\|ρ\\| offset | c (offset) | "
        "extrap. J: raw | reducible | offset |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    largest = max(preset.channels)
    for i, name in enumerate(names):
        st = stats["frontier"][name]
        finals = []
        for seed in used:
            mine = [r for r in by_seed[seed] if r["channels"] == largest]
            if mine:
                final = max(mine, key=lambda r: r["step"])
                finals.append(total(final) if i == 0 else level(final, i - 1))
        js, j, ratio = (mean_std(v) for v in ([f[1] for f in finals], [f[0] for f in finals],
                                               [f[2] / f[0] for f in finals]))  # fmt: skip
        lines.append(
            f"| {name} | {_g(js[0])} | {_pm(j)} | {_pm(ratio)} | {_pm(st['raw']['abs_rho'], '.3f')} | "
            f"{_pm(st['reducible']['abs_rho'], '.3f')} | {_pm(st['offset']['abs_rho'], '.3f')} | "
            f"{_pm(st['offset']['c'])} | {_pm_pct(st['raw']['rel_err_j'])} | "
            f"{_pm_pct(st['reducible']['rel_err_j'])} | {_pm_pct(st['offset']['rel_err_j'])} |"
        )
    lines += [
        "",
        "### Subtracting other constants (total, |ρ| of log(J − k·J*) on log F)",
        "",
        "Any constant below the level the curve bends towards straightens a log-log plot; this shows whether J* "
        "is special. Mean ± std over seeds. (k = 1 can differ from the reducible fit's |ρ| in the last digit: "
        "that fit uses the gap estimator's total, this the difference of the totals.)",
        "",
        "| k (× J*) | constant | \\|ρ\\| frontier | \\|ρ\\| final point per size |",
        "|---|---|---|---|",
        *(
            f"| {k:g} | {k * jstar_nodes['total']:.3g} | "
            + " | ".join(
                _pm(mean_std([floor_sweep(series_of[seed][0], mode)[k] for seed in used]), ".3f") for mode in MODES
            )
            + " |"
            for k in FLOOR_MULTIPLES
        ),
        "",
        "## Against the paper",
        "",
        f"Paper: {PAPER}. Here (frontier fits, mean ± std over {n_seeds}), for the objective's total: "
        f"|ρ| {_pm(ts['raw']['abs_rho'], '.3f')} (J) → {_pm(ts['reducible']['abs_rho'], '.3f')} (J − J*)"
        f"{f' ({per_seed_total})' if len(used) > 1 else ''}; R² {_pm(ts['raw']['r2'], '.3f')} → "
        f"{_pm(ts['reducible']['r2'], '.3f')}; extrapolation to the largest size, error of J: "
        f"{_pm_pct(ts['raw']['rel_err_j'])} (J = βF^α) vs {_pm_pct(ts['reducible']['rel_err_j'])} "
        f"(J = J* + βF^α) vs {_pm_pct(ts['offset']['rel_err_j'])} (J = βF^α + c, c free). At the high-noise node "
        f"{high}: |ρ| {_pm(hs['raw']['abs_rho'], '.3f')} → {_pm(hs['reducible']['abs_rho'], '.3f')}, "
        f"extrapolation error of J {_pm_pct(hs['raw']['rel_err_j'])} vs {_pm_pct(hs['reducible']['rel_err_j'])}.",
        "",
        f"Paired per seed (reducible − raw, mean ± std over seeds; total): {paired_text(fits, used)}.",
        "",
        keep_notes(report),
        "",
        f"Per-diagnosis numbers: [{report.with_suffix('.csv').name}]({report.with_suffix('.csv').name}); "
        f"all fits, per seed and mean ± std: [{report.with_suffix('.json').name}]({report.with_suffix('.json').name}).",
        "",
    ]
    text = "\n".join(lines)
    while "\n\n\n" in text:  # empty labels leave runs of blank lines
        text = text.replace("\n\n\n", "\n\n")
    runs.write_report(report, text, table=csv_text_of(rows, preset), data=summary)


def sizes(preset: Preset, spec: str | None) -> list[int]:
    """The sizes to train: all of the preset's, or the comma-separated subset ``spec``."""
    if spec is None:
        return list(preset.channels)
    try:
        chosen = [int(v) for v in spec.split(",")]
    except ValueError:
        raise DifflossError(f"--channels must be comma-separated integers, got {spec!r}") from None
    extra = sorted(set(chosen) - set(preset.channels))
    if extra:
        raise DifflossError(f"--channels {extra} are not sizes of preset {preset.name!r}: {list(preset.channels)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    ap = runs.experiment_parser(__doc__, "scaling_law", PRESETS, REPORTS)
    ap.add_argument(
        "--channels",
        default=None,
        help="train only these sizes (comma-separated base widths of the preset), e.g. to run two processes on "
        "disjoint sizes at once; the report always covers the whole preset",
    )
    ap.add_argument(
        "--seeds",
        default=None,
        help="training seeds (comma-separated; default the preset's, mnist14: 0,1,2); trained seed by seed, and "
        "the report covers exactly these seeds",
    )
    args = runs.parse_experiment_args(ap, argv)
    preset = PRESETS[args.preset]
    if args.seeds is not None:
        preset = replace(preset, seeds=tuple(runs.parse_seeds(args.seeds)))
    report = runs.report_path(args, REPORTS, "scaling_law", MAIN_PRESET)
    seeds = ",".join(map(str, preset.seeds))
    command = f"PYTHONPATH=src OMP_NUM_THREADS=1 python experiments/scaling_law.py --preset {preset.name}"
    command += f" --root {args.root}"
    command += f" --seeds {seeds}"

    if not args.report_only:
        wall = time.perf_counter()
        reference_jstar(args.root, preset)
        cells = [(c, seed) for seed in preset.seeds for c in sizes(preset, args.channels)]
        grid(args.root, preset).run(cells, partial(run_size, preset, args.root, {}, device=args.device))
        log(f"all seeds and sizes done in {time.perf_counter() - wall:.0f} s wall")
    write_report(args.root, preset, command, report)
    log(f"wrote {report}")
    return 0


if __name__ == "__main__":
    run_cli(main)
