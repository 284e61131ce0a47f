"""Summarize the runs of experiments/bridge_small_runs.sh as a Markdown table (stdout, or --out FILE).

Usage: python experiments/bridge_small_table.py ROOT [ROOT ...] [--summary] [--out reports/bridge_small_table.md]

One row per run; with ``--summary`` one row per (target, sampler, loss) over all ROOTs (one ROOT per seed), mean ± std
of the final metrics over the runs that finished without diverging.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from diffloss.io import write_text_atomic
from diffloss.runs import mean_std, read_json

COLUMNS = ("elbo", "log_z", "ess", "sinkhorn", "mmd", "emc")


def fmt(v: object) -> str:
    return "–" if v is None else f"{v + 0.0:.3g}" if isinstance(v, float) else str(v)


def cpu_seconds(run_dir: Path) -> str:
    """User + system CPU seconds of the run from ``time.txt`` (``/usr/bin/time -f "%U %S %e"``), if present."""
    fields = (run_dir / "time.txt").read_text().split() if (run_dir / "time.txt").exists() else []
    return f"{float(fields[-3]) + float(fields[-2]):.0f}" if len(fields) >= 3 else "–"


def gate(arch: dict) -> str:
    """Whether a run's sampler config has the score gate (older configs lack the key: no)."""
    return "yes" if arch.get("score_gate") else "no"


def finished(root: Path) -> list[Path]:
    """The metrics file of every finished run under ``root``: metrics.json, else metrics_no_sinkhorn.json."""
    done = {p.parent: p for p in root.glob("*/metrics_no_sinkhorn.json")}
    done.update({p.parent: p for p in root.glob("*/metrics.json")})  # a full evaluation wins
    return [done[d] for d in sorted(done)]


def summary(roots: list[Path]) -> str:
    """Mean ± std over seeds per cell; diverged runs are counted, not averaged. A cell is everything in config.json
    but the seed, so runs of different settings (say with and without the score gate) are never pooled."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in (p for root in roots for p in finished(root)):
        cfg = read_json(path.parent / "config.json")
        cfg.pop("seed")
        groups[json.dumps(cfg, sort_keys=True)].append(read_json(path))
    rows = [
        "| target | sampler | loss | iters | lr | score gate | ELBO | log Ẑ − log Z | ESS | EMC | MMD | diverged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cells = [(json.loads(key), runs) for key, runs in groups.items()]
    for cfg, runs in sorted(cells, key=lambda c: (c[0]["target"], c[0]["sampler"]["sampler"], c[0]["loss"], str(c[0]))):
        arch = cfg["sampler"]
        ok = [m for m in runs if m["diverged_at"] is None]
        cols = [mean_std(m.get(k) for m in ok).text() for k in ("elbo", "log_z_error", "ess", "emc", "mmd")]
        rows.append(
            f"| {cfg['target']} | {arch['sampler']} | {cfg['loss']} | {cfg['iters']} | {fmt(cfg['lr'])} | {gate(arch)} "
            f"| {' | '.join(cols)} | {len(runs) - len(ok)} of {len(runs)} |"
        )
    return "\n".join(rows) + "\n"


def table(root: Path) -> str:
    rows = [
        "| target | sampler | loss | prior std₀ | σ₀ | lr | score gate | ELBO | log Ẑ | abs(log Ẑ − log Z) | ESS "
        "| Sinkhorn (ε) | MMD | EMC | iters | diverged at | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in finished(root):
        m, cfg = read_json(path), read_json(path.parent / "config.json")
        err = "–" if m.get("log_z_error") is None else f"{abs(m['log_z_error']):.3g}"
        sink = "–" if m["sinkhorn"] is None else f"{m['sinkhorn']:.4g} ({m['sinkhorn_eps']:.3g})"
        arch = cfg["sampler"]
        rows.append(
            f"| {cfg['target']} | {arch['sampler']} | {cfg['loss']} | {fmt(arch['init_std'])} "
            f"| {fmt(arch['init_sigma'])} | {fmt(cfg['lr'])} | {gate(arch)} "
            f"| {fmt(m['elbo'])} | {fmt(m['log_z'])} "
            f"| {err} | {fmt(m['ess'])} | {sink} | {fmt(m['mmd'])} | {fmt(m['emc'])} | {m['iterations']} "
            f"| {fmt(m['diverged_at'])} | {cpu_seconds(path.parent)} |"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", type=Path, nargs="+")
    ap.add_argument("--summary", action="store_true", help="mean ± std over the ROOTs (seeds) per cell")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    text = summary(a.roots) if a.summary else "".join(table(r) for r in a.roots)
    if a.out:
        write_text_atomic(a.out, text)
    print(text, end="")


if __name__ == "__main__":
    main()
