"""``diffloss diagnose``: a model's loss per noise level against the optimal loss J*, on the same draws."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import click
import numpy as np
import torch

from diffloss.cli.common import log_spaced, parse_floats
from diffloss.data import Dataset, load_dataset
from diffloss.diagnose import BELOW_Z, Diagnosis, diagnose
from diffloss.errors import DifflossError
from diffloss.io import write_json_atomic, write_text_atomic
from diffloss.levels import Levels, snap_to_steps
from diffloss.loader import DiffusionModel, load_diffusers, load_trained

DEFAULT_RANGE = (0.002, 80.0)
GAP_ESTIMATOR = (
    "gap = mean ||x_hat - m||^2 / D (unbiased since E[x0 - m | x_t] = 0, non-negative, lower variance than the "
    "paired difference, which is reported as paired_gap_* and used for the below-J* check)"
)


def resolve_levels(model: DiffusionModel, sigmas: str | None, k: int | None) -> Levels:
    """Levels from ``--sigmas`` (checked against the process's range) or ``--levels K`` (log-spaced over
    [0.002, 80] clipped to that range); snapped to the training steps for timestep-conditioned models."""
    if sigmas is not None and k is not None:
        raise DifflossError("give only one of --sigmas and --levels")
    proc = model.process
    if sigmas is not None:
        s = np.asarray(parse_floats(sigmas, "--sigmas", positive=True))
        proc.t_of_nsr(s)  # refuses levels the process never reaches
    else:
        lo_l, hi_l = proc.logsnr_range()
        lo = max(DEFAULT_RANGE[0], math.exp(-hi_l / 2) * (1 + 1e-9))
        hi = min(DEFAULT_RANGE[1], math.exp(-lo_l / 2) * (1 - 1e-9))
        s = np.asarray(log_spaced(16 if k is None else k, lo, hi))
    if model.cond == "timestep":
        return snap_to_steps(proc, s)
    return Levels.from_logsnr(proc, torch.from_numpy(-2 * np.log(s)))


def check_shape(ds: Dataset, model: DiffusionModel) -> None:
    squeeze = lambda shape: tuple(n for n in shape if n != 1)  # noqa: E731
    if squeeze(ds.shape) != squeeze(model.shape):
        raise DifflossError(
            f"{ds.name} has samples of shape {tuple(ds.shape)} but the model takes {model.shape}; "
            "give data of the model's shape (the data it was trained on)"
        )


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _table(d: Diagnosis, target: str) -> str:
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffloss.io import atomic_write

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
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)


@click.command("diagnose")
@click.option("--ckpt", default=None, help="A `diffloss train` run directory (its checkpoint.safetensors).")
@click.option("--diffusers", "diffusers_dir", default=None, help="A diffusers save_pretrained directory (UNet2DModel "
              "+ DDPMScheduler/EulerDiscreteScheduler config).")  # fmt: skip
@click.option("--data", required=True, help="The model's training data: built-in name, .npy/.npz or image folder.")
@click.option("--sigmas", default=None, help="Comma-separated noise-to-signal ratios s = σ/α.")
@click.option("--levels", type=int, default=None, help="K log-spaced s over [0.002, 80] ∩ the process's range [16].")
@click.option("--queries", type=int, default=1024, show_default=True, help="(x0, ε) draws, the same at every level.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws.")
@click.option("--batch", type=int, default=256, show_default=True, help="Model batch size.")
@click.option("--raw", is_flag=True, help="--ckpt: the raw weights instead of the EMA weights.")
@click.option("--json", "json_out", required=True, type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None, help="Write a CSV table here.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None, help="Write a PNG plot here.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def command(
    ckpt, diffusers_dir, data, sigmas, levels, queries, seed, batch, raw, json_out, csv_out, plot_out, quiet
) -> None:  # fmt: skip
    """Compare a trained model's denoising loss with the optimal loss J* level by level.

    At each noise-to-signal ratio s = σ/α the model sees x_t = α·x0 + σ·ε for Q draws (x0 a row of DATA,
    ε ~ N(0, I)); the optimal x0-predictor is the posterior mean over all rows of DATA (float64 sums). Model and
    optimum use the *same* draws, so their difference has its own small standard error. Reported per level,
    as per-dimension MSE in x0 units and in the units of the model's target: the model's loss J_θ, the
    optimal loss J*, the reducible gap J_θ − J* (estimated by E||x̂0 − m||²/D: unbiased, non-negative,
    low-variance) and the gap ratio (J_θ − J*)/J_θ, plus one summary line. If the model's loss is below J*
    by more than 4 standard errors at some level (impossible for a correct comparison: a unit, target or
    timestep convention bug), a warning goes to stderr and the JSON's "warning" is set.

    DATA must be the model's training data in the model's units (built-in image sets are scaled to [-1, 1],
    as `diffloss train` and diffusers pipelines use them). --ckpt uses the EMA weights unless --raw.
    --diffusers models are evaluated at their discrete training steps nearest to the requested s.

    Example: diffloss diagnose --ckpt runs/digits --data digits --levels 12 --json out/diag.json --plot out/diag.png
    """
    if (ckpt is None) == (diffusers_dir is None):
        raise DifflossError("give exactly one of --ckpt DIR and --diffusers DIR")
    if queries < 2 or batch < 1:
        raise DifflossError(f"--queries must be >= 2 and --batch >= 1, got {queries} and {batch}")
    model = load_trained(ckpt, ema=not raw) if ckpt is not None else load_diffusers(diffusers_dir)
    lv = resolve_levels(model, sigmas, levels)
    ds = load_dataset(data)
    check_shape(ds, model)
    d = diagnose(model, ds.x, lv, queries=queries, seed=seed, batch=batch, progress=not quiet)
    warning = d.warning()
    doc = {
        "model": {
            "source": "ckpt" if ckpt is not None else "diffusers",
            "path": ckpt or diffusers_dir,
            "ema": not raw if ckpt is not None else None,
            "process": model.process.to_dict(),
            "target": model.target.name,
            "condition": model.cond,
        },
        "data": {"name": ds.name, "fingerprint": ds.fingerprint, "variance_per_dim": ds.info()["variance_per_dim"]},
        "n_data": ds.n,
        "dim": ds.dim,
        "queries": queries,
        "seed": seed,
        "units": "per-dimension mean; *_x0 in x0 units, *_loss in the model's target units",
        "gap_estimator": GAP_ESTIMATOR,
        "below_z": BELOW_Z,
        "summary": d.summary(),
        "below_optimal": bool(d.below_optimal.any()),
        "warning": warning,
        "levels": d.to_rows(),
    }
    write_json_atomic(json_out, doc)
    if csv_out:
        write_text_atomic(csv_out, _csv_text(doc["levels"]))
    if plot_out:
        plot_diagnosis(
            d, f"{Path(doc['model']['path']).name} on {ds.name}: {model.target.name}, {model.process.name}", plot_out
        )
    if warning:
        click.echo(f"Warning: {warning}", err=True)
    if not quiet:
        click.echo(_table(d, model.target.name))
        click.echo(d.summary())
