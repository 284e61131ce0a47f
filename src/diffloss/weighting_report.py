"""What ``diffloss weighting`` shows of a loss weighting: its weights as a JSON table and a plot of several.

The contract of the JSON document is in docs/design.md ("CLI contracts")."""

from __future__ import annotations

from typing import Any

import torch

from diffloss.density import LevelDensity
from diffloss.errors import DifflossError
from diffloss.figures import pyplot, save_figure
from diffloss.process import Process
from diffloss.weighting import Weighting, implied_elbo_weight


def weighting_table(
    scheme: Weighting, process: Process, target: str, logsnr: list[float], density: LevelDensity | None = None
) -> dict[str, Any]:
    """The ``diffloss weighting --json`` document (the contract in docs/design.md) for one scheme; with a
    ``density`` also its config and the implied ELBO weight 2 p(lambda) w_eps(lambda) at ``logsnr``."""
    lam = torch.tensor(logsnr, dtype=torch.float64)
    weights = scheme.weight(lam, process, target)
    if not torch.isfinite(weights).all():
        bad = lam[~torch.isfinite(weights)][0].item()
        raise DifflossError(f"the weight of {scheme.name!r} on target {target!r} is not finite at log-SNR {bad:g}")
    out = {
        "scheme": scheme.name,
        "params": scheme.to_dict(),
        "published_target": scheme.published,
        "formula": scheme.FORMULA,
        "process": process.name,
        "target": target,
        "logsnr": logsnr,
        "weights": weights.tolist(),
        "x0_weights": scheme.x0_weight(lam, process).tolist(),
    }
    if density is not None:
        out["density"] = density.to_dict()
        out["implied_elbo_weight"] = implied_elbo_weight(scheme, density, process, lam).tolist()
    return out


def plot_schemes(
    path: str, schemes: list[Weighting], process: Process, density: LevelDensity | None, lam_range: tuple[float, float]
) -> None:
    """x0-equivalent weights against lambda, and with a density the implied weights 2 p(lambda) w_eps(lambda)."""
    plt = pyplot()
    lam = torch.linspace(*lam_range, 801, dtype=torch.float64)
    fig, axes = plt.subplots(1, 2 if density else 1, figsize=(12 if density else 6.5, 4.5), squeeze=False)
    ax = axes[0, 0]
    styles = ["-", "--", ":", "-."]
    for i, w in enumerate(schemes):
        ax.plot(lam, w.weight(lam, process, "x0"), styles[i % 4], label=_label(w))
    ax.set(
        yscale="log", xlabel="log-SNR λ", ylabel="weight on the x0 MSE", title=f"x0-equivalent weights ({process.name})"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if density:
        ax = axes[0, 1]
        for i, w in enumerate(schemes):
            implied = implied_elbo_weight(w, density, process, lam)
            ax.plot(lam, implied / torch.trapezoid(implied, lam), styles[i % 4], label=_label(w))
        ax.set(
            yscale="log",
            ylim=(1e-4, None),
            xlabel="log-SNR λ",
            ylabel="2 p(λ) w_ε(λ), unit area",
            title=f"implied weight per unit λ ({process.name}, {density.name})",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _label(w: Weighting | LevelDensity) -> str:
    params = {k: v for k, v in w.to_dict().items() if k != "name"}
    return w.name + ("" if not params else " (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")")
