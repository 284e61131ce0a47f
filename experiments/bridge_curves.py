"""Training curves of bridge-sampler runs: log Ẑ − log Z, ELBO and EMC against the iteration, from metrics.jsonl.

Usage: python experiments/bridge_curves.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...] [--panels elbo,log_z,ess]

Runs that share a LABEL (one per seed) are drawn as their mean with a band of ± one std (sample std over seeds).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from diffloss.runs import save_figure

TITLES = {
    "log_z_error": "log Ẑ − log Z (nats)",
    "elbo": "ELBO (nats)",
    "emc": "EMC",
    "log_z": "log Ẑ (nats)",
    "ess": "ESS",
    "sigma_mean": "mean σ",
}
PANELS = ("log_z_error", "elbo", "emc")  # the default; targets without a known log Z or modes want --panels
SYMLOG = {"log_z_error", "elbo"}  # panels on a symlog axis when their values span orders of magnitude
SPAN = 100.0  # ... i.e. when the largest |value| exceeds SPAN times the smallest (or 10, symlog's linear range)


def curves(run_dir: Path, panels: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (iterations, values)} of the evaluations in ``run_dir/metrics.jsonl``."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    its = np.array([r["iteration"] for r in rows], dtype=float)
    out = {}
    for key in panels:
        vals = np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)
        out[key] = (its, vals)
    return out


def plot(groups: dict[str, list[Path]], path: Path, panels: tuple[str, ...] = PANELS) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.7 * len(panels), 3.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    seen: dict[str, list[np.ndarray]] = {key: [] for key in panels}
    for label, dirs in groups.items():
        per_run = [curves(d, panels) for d in dirs]
        for ax, key in zip(axes, panels):
            its = per_run[0][key][0]
            vals = np.stack([c[key][1] for c in per_run])
            mean = vals.mean(0)
            seen[key].append(np.abs(mean[np.isfinite(mean)]))
            (line,) = ax.plot(its, mean, marker="o", ms=3, label=f"{label} (n={len(dirs)})")
            if len(dirs) > 1:
                std = vals.std(0, ddof=1)
                ax.fill_between(its, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            ax.set_title(TITLES[key], fontsize=9)
            ax.set_xlabel("iteration")
    for ax, key in zip(axes, panels):
        if key == "log_z_error":
            ax.axhline(0.0, color="gray", lw=0.8)
        size = np.concatenate(seen[key])
        if key in SYMLOG and size.size and size.max() > SPAN * max(size.min(), 10.0):
            ax.set_yscale("symlog", linthresh=10)
    axes[0].legend(fontsize=7)
    return save_figure(fig, path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR; repeat a LABEL for its other seeds")
    ap.add_argument("--panels", default=",".join(PANELS), help=f"Metrics, one panel each, of {', '.join(TITLES)}.")
    a = ap.parse_args()
    panels = tuple(p.strip() for p in a.panels.split(","))
    if not panels or any(p not in TITLES for p in panels):
        ap.error(f"--panels: give some of {', '.join(TITLES)}, got {a.panels!r}")
    groups: dict[str, list[Path]] = defaultdict(list)
    for item in a.runs:
        label, sep, run_dir = item.partition("=")
        if not sep or not (Path(run_dir) / "metrics.jsonl").exists():
            ap.error(f"{item!r}: expected LABEL=RUN_DIR with RUN_DIR/metrics.jsonl")
        groups[label].append(Path(run_dir))
    print(plot(groups, a.out, panels))


if __name__ == "__main__":
    main()
