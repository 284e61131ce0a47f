"""Summarize the runs of experiments/bridge_small_runs.sh as a Markdown table (stdout, or --out FILE).

Usage: python experiments/bridge_small_table.py runs/bridge_small [--out reports/bridge_small_table.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffloss.io import write_text_atomic

COLUMNS = ("elbo", "log_z", "ess", "sinkhorn", "mmd", "emc")


def fmt(v: object) -> str:
    return "–" if v is None else f"{v + 0.0:.3g}" if isinstance(v, float) else str(v)


def cpu_seconds(run_dir: Path) -> str:
    """User + system CPU seconds of the run from ``time.txt`` (``/usr/bin/time -f "%U %S %e"``), if present."""
    fields = (run_dir / "time.txt").read_text().split() if (run_dir / "time.txt").exists() else []
    return f"{float(fields[-3]) + float(fields[-2]):.0f}" if len(fields) >= 3 else "–"


def table(root: Path) -> str:
    rows = [
        "| target | sampler | loss | prior std₀ | σ₀ | lr | score gate | ELBO | log Ẑ | abs(log Ẑ − log Z) | ESS | Sinkhorn (ε) | MMD "
        "| EMC | iters | diverged at | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    done = {p.parent: p for p in root.glob("*/metrics_no_sinkhorn.json")}
    done.update({p.parent: p for p in root.glob("*/metrics.json")})  # a full evaluation wins
    for path in (done[d] for d in sorted(done)):
        m = json.loads(path.read_text())
        cfg = json.loads((path.parent / "config.json").read_text())
        err = "–" if m.get("log_z_error") is None else f"{abs(m['log_z_error']):.3g}"
        sink = "–" if m["sinkhorn"] is None else f"{m['sinkhorn']:.4g} ({m['sinkhorn_eps']:.3g})"
        arch = cfg["sampler"]
        rows.append(
            f"| {cfg['target']} | {arch['sampler']} | {cfg['loss']} | {fmt(arch['init_std'])} "
            f"| {fmt(arch['init_sigma'])} | {fmt(cfg['lr'])} | {'yes' if arch.get('score_gate') else 'no'} "
            f"| {fmt(m['elbo'])} | {fmt(m['log_z'])} "
            f"| {err} | {fmt(m['ess'])} | {sink} | {fmt(m['mmd'])} | {fmt(m['emc'])} | {m['iterations']} "
            f"| {fmt(m['diverged_at'])} | {cpu_seconds(path.parent)} |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    text = table(a.root)
    if a.out:
        write_text_atomic(a.out, text)
    print(text, end="")


if __name__ == "__main__":
    main()
