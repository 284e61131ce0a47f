"""What ``diffloss diagnose`` does around ``diagnose()``: the levels to diagnose at, the data-shape check, and
the outputs (the JSON report, its CSV, the terminal table and the plot). The contract of the JSON report is in
docs/design.md ("CLI contracts")."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from diffloss.classes import num_classes_of
from diffloss.data import Dataset, load_dataset
from diffloss.diagnose import BELOW_Z, Diagnosis, diagnose
from diffloss.errors import DifflossError
from diffloss.figures import pyplot, save_figure
from diffloss.inference import execution_record
from diffloss.levels import NSR_RANGE, Levels, log_spaced, snap_to_steps
from diffloss.loader import DiffusionModel, load_trained

DEFAULT_LEVELS = 16
GAP_ESTIMATOR = (
    "gap = mean ||x_hat - m||^2 / D (unbiased since E[x0 - m | x_t] = 0, non-negative, lower variance than the "
    "paired difference, which is reported as paired_gap_* and used for the below-J* check)"
)


def diagnosis_levels(model: DiffusionModel, sigmas: Sequence[float] | None, count: int | None) -> Levels:
    """Levels at the noise-to-signal ratios ``sigmas`` (which the model's process must reach: the model is only
    defined there) or ``count`` (default 16) log-spaced over ``NSR_RANGE`` clipped to the process's range;
    snapped to the training steps for timestep-conditioned models."""
    if sigmas is not None and count is not None:
        raise DifflossError("give only one of --sigmas and --levels")
    proc = model.process
    if sigmas is not None:
        s = np.asarray(sigmas, dtype=np.float64)
        proc.t_of_nsr(s)  # refuses levels the process never reaches
    else:
        lo_l, hi_l = proc.logsnr_range()
        lo = max(NSR_RANGE[0], math.exp(-hi_l / 2) * (1 + 1e-9))
        hi = min(NSR_RANGE[1], math.exp(-lo_l / 2) * (1 - 1e-9))
        s = np.asarray(log_spaced(DEFAULT_LEVELS if count is None else count, lo, hi))
    if model.cond == "timestep":
        return snap_to_steps(proc, s)
    return Levels.from_logsnr(proc, torch.from_numpy(-2 * np.log(s)))


def diagnose_run(
    run_dir: str | os.PathLike,
    data: str,
    *,
    sigmas: Sequence[float] | None = None,
    levels: int | None = None,
    queries: int = 1024,
    seed: int = 0,
    conditional: bool = False,
    device: str | None = None,
) -> Diagnosis:
    """``diffloss diagnose --ckpt RUN_DIR --data DATA [--conditional]`` of a training run's EMA model: at the
    noise-to-signal ratios ``sigmas`` or ``levels`` log-spaced ones (``diagnosis_levels``), ``queries`` draws of
    seed ``seed``; ``conditional``: a class-conditional model given each query's class, against the conditional J*
    (``diagnosis_labels``); ``device``: where the model's forward passes run (the posterior is computed on the
    host, in float64: ``diagnose``)."""
    model = load_trained(run_dir)
    ds = load_dataset(data)
    check_shape(ds, model)
    labels = diagnosis_labels(ds, model, conditional)
    at = diagnosis_levels(model, sigmas, levels)
    return diagnose(model, ds.x, at, queries=queries, seed=seed, labels=labels, device=device)


def diagnosis_labels(ds: Dataset, model: DiffusionModel, conditional: bool) -> np.ndarray | None:
    """The class of each row that a conditional diagnosis gives the model (None: unconditional); refuses an
    unconditional model, unlabelled data and labels beyond the model's classes, each in one line."""
    if not conditional:
        return None
    if not model.num_classes:
        raise DifflossError("--conditional needs a class-conditional model (diffloss train --conditional)")
    if num_classes_of(ds.labels, repr(ds.name)) > model.num_classes:
        raise DifflossError(f"the labels of {ds.name!r} exceed the model's {model.num_classes} classes")
    return ds.labels


def check_shape(ds: Dataset, model: DiffusionModel) -> None:
    """Refuse data whose samples do not have the model's shape (size-1 axes ignored)."""
    squeeze = lambda shape: tuple(n for n in shape if n != 1)  # noqa: E731
    if squeeze(ds.shape) != squeeze(model.shape):
        raise DifflossError(
            f"{ds.name} has samples of shape {tuple(ds.shape)} but the model takes {model.shape}; "
            "give data of the model's shape (the data it was trained on)"
        )


def diagnosis_report(
    d: Diagnosis,
    model: DiffusionModel,
    ds: Dataset,
    *,
    source: dict[str, Any],
    queries: int,
    seed: int,
    execution: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report of ``diffloss diagnose``; ``source`` describes where the model came from (source, path,
    ema), ``execution`` where it ran (``diffloss.inference.execution_record``; default: one process, fp32 on the
    CPU)."""
    return {
        "model": {
            **source,
            "process": model.process.to_dict(),
            "target": model.target.name,
            "condition": model.cond,
        },
        "data": {"name": ds.name, "fingerprint": ds.fingerprint, "variance_per_dim": ds.info()["variance_per_dim"]},
        "n_data": ds.n,
        "dim": ds.dim,
        "queries": queries,
        "seed": seed,
        "execution": execution or execution_record("cpu", "fp32", False, None),
        "conditional": d.conditional,
        "units": "per-dimension mean; *_x0 in x0 units, *_loss in the model's target units",
        "gap_estimator": GAP_ESTIMATOR,
        "below_z": BELOW_Z,
        "summary": d.summary(),
        "below_optimal": bool(d.below_optimal.any()),
        "warning": d.warning(),
        "levels": d.to_rows(),
    }


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """A CSV with one line per level (the report's ``levels``)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def diagnosis_table(d: Diagnosis, target: str) -> str:
    """The terminal table: per level J_x0, J*_x0, the gap with its stderr, the gap ratio and J in target units."""
    lines = [f"{'s':>10} {'J_x0':>11} {'J*_x0':>11} {'gap_x0':>11} {'±':>9} {'ratio':>6} {'J_' + target:>11}"]
    for i, s in enumerate(d.sigmas):
        flag = "  BELOW J*" if d.below_optimal[i] else ""
        lines.append(
            f"{s:>10.4g} {d.model_x0[i]:>11.4g} {d.optimal_x0[i]:>11.4g} {d.gap_x0[i]:>11.4g} "
            f"{d.gap_x0_se[i]:>9.2g} {d.ratio[i]:>6.3f} {d.model_target[i]:>11.4g}{flag}"
        )
    return "\n".join(lines)


def plot_diagnosis(d: Diagnosis, title: str, path: str) -> None:
    """PNG: J_theta and J* (x0 units, +-2 stderr) vs s log-log, and the gap ratio vs s."""
    plt = pyplot()
    s = d.sigmas
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for y, e, label in ((d.model_x0, d.model_x0_se, "model J_θ"), (d.optimal_x0, d.optimal_x0_se, "optimal J*")):
        ok = y > 0
        a1.plot(s[ok], y[ok], "o-", ms=3, label=label)
        a1.fill_between(s[ok], np.maximum(y - 2 * e, y * 1e-3)[ok], (y + 2 * e)[ok], alpha=0.25)
    floor = 0.1 * d.model_x0[d.model_x0 > 0].min(initial=np.inf)  # J* ~ 0 at small s would squash the axis
    a1.set(xscale="log", yscale="log", xlabel="noise-to-signal ratio s = σ/α", ylabel="x0 MSE per dimension")
    if np.isfinite(floor):
        a1.set_ylim(bottom=floor)
    a2.plot(s, d.ratio, "o-", ms=3, c="C3")
    a2.set(xscale="log", ylim=(0, 1.02), xlabel="noise-to-signal ratio s = σ/α", ylabel="gap ratio (J_θ − J*)/J_θ")
    for ax in (a1, a2):
        ax.grid(True, which="both", alpha=0.3)
    a1.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
