"""Training curves of bridge-sampler runs: log Ẑ − log Z, ELBO and EMC against the iteration, from metrics.jsonl.

Usage: python experiments/bridge_curves.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]

Runs that share a LABEL (one per seed) are drawn as their mean with a band of ± one std (sample std over seeds).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from diffloss.runs import save_figure

PANELS = (("log_z_error", "log Ẑ − log Z (nats)"), ("elbo", "ELBO (nats)"), ("emc", "EMC"))


def curves(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{metric: (iterations, values)} of the evaluations in ``run_dir/metrics.jsonl``."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    its = np.array([r["iteration"] for r in rows], dtype=float)
    out = {}
    for key, _ in PANELS:
        vals = np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)
        out[key] = (its, vals)
    return out


def plot(groups: dict[str, list[Path]], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.3), layout="constrained")
    axes = fig.subplots(1, len(PANELS))
    for label, dirs in groups.items():
        per_run = [curves(d) for d in dirs]
        for ax, (key, title) in zip(axes, PANELS):
            its = per_run[0][key][0]
            vals = np.stack([c[key][1] for c in per_run])
            mean = vals.mean(0)
            (line,) = ax.plot(its, mean, marker="o", ms=3, label=f"{label} (n={len(dirs)})")
            if len(dirs) > 1:
                std = vals.std(0, ddof=1)
                ax.fill_between(its, mean - std, mean + std, color=line.get_color(), alpha=0.2)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("iteration")
    axes[0].axhline(0.0, color="gray", lw=0.8)
    axes[0].set_yscale("symlog", linthresh=10)
    axes[1].set_yscale("symlog", linthresh=10)
    axes[0].legend(fontsize=7)
    return save_figure(fig, path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_DIR; repeat a LABEL for its other seeds")
    a = ap.parse_args()
    groups: dict[str, list[Path]] = defaultdict(list)
    for item in a.runs:
        label, sep, run_dir = item.partition("=")
        if not sep or not (Path(run_dir) / "metrics.jsonl").exists():
            ap.error(f"{item!r}: expected LABEL=RUN_DIR with RUN_DIR/metrics.jsonl")
        groups[label].append(Path(run_dir))
    print(plot(groups, a.out))


if __name__ == "__main__":
    main()
