"""Log-log plot of an optimal-loss curve: J*(s) in x0 units and in a chosen target's units."""

from __future__ import annotations

import os

import numpy as np

from diffloss.figures import pyplot, save_figure
from diffloss.optimal.result import OptimalLossResult
from diffloss.process import Process
from diffloss.target import Target


def plot_optimal_loss(
    result: OptimalLossResult, process: Process, target: Target, data_variance: float, path: str | os.PathLike
) -> None:
    """Write a PNG: J*(s) per dimension vs s (log-log) with a +-2 stderr band and the per-dimension data
    variance as the large-s asymptote; a second panel in ``target`` units unless the target is x0."""
    plt = pyplot()
    panels = [("x0", result.x0_mse, result.stderr)]
    if target.name != "x0":
        loss, err = result.in_target(process, target)
        panels.append((target.name, loss, err))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    s = result.sigmas
    for ax, (name, y, e) in zip(axes[0], panels):
        ok = y > 0
        ax.plot(s[ok], y[ok], "o-", ms=3, label=f"J* ({result.estimator}, {result.n_queries} queries)")
        ax.fill_between(s[ok], np.maximum(y - 2 * e, y * 1e-3)[ok], (y + 2 * e)[ok], alpha=0.3, label="±2 stderr")
        if not ok.all():
            note = f"J* = 0 at {int((~ok).sum())} levels (s ≤ {s[~ok].max():.3g}; off the log axis)"
            ax.plot([], [], " ", label=note)
        if name == "x0":
            ax.axhline(data_variance, ls="--", c="k", lw=1, label=f"data variance per dim {data_variance:.4g}")
        ax.set(xscale="log", yscale="log", xlabel="noise-to-signal ratio s = σ/α")
        ax.set_ylabel(f"optimal {name} loss (per-dim MSE)" + ("" if name == "x0" else f", {process.name}"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"optimal loss, N = {result.n_data}, D = {result.dim}")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
