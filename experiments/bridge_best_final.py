"""The final and the best-checkpoint metrics of a bridge benchmark root, per (target, sampler, loss), as Markdown.

Usage: python experiments/bridge_best_final.py ROOT [--out FILE]

ROOT is a ``diffloss bridge bench`` root (``<target>/<sampler>/<loss>/seed<k>/metrics.json``). Per cell over its
seeds: mean ± std (ddof 1) of the final ELBO, log Ẑ and ESS, and of the best evaluated ELBO's (``metrics.json``
"best", the checkpoint the reference reports), the iterations the best was reached at, and the divergences (a
diverged run's final metrics are those of its last good checkpoint; it is counted, and its best stays in the best
columns). Then, per (target, sampler), the losses ordered by mean final and by mean best ELBO, and the per-seed
differences rKL-LD − LV and rKL-LD − rKL-R (same seed: same initialisation, so the difference is paired).

With ``--curvature`` (CMCD) each final checkpoint also gets the Euler stability estimate of
``diffloss.bridge.monitor.euler_curvature`` (the Langevin step times the curvature; the run explodes at 2), for runs
trained before it was logged.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch

from diffloss.bridge.monitor import euler_curvature
from diffloss.bridge.run import BridgeRun
from diffloss.bridge.train import CHECKPOINT
from diffloss.io import write_text_atomic
from diffloss.runs import mean_std, read_json

METRICS = (("elbo", "ELBO"), ("log_z", "log Ẑ"), ("ess", "ESS"))


def runs(root: Path, curvature: bool = False) -> dict[tuple[str, str, str], dict[int, dict]]:
    """{(target, sampler, loss): {seed: metrics.json}} of the finished runs under ``root``; with ``curvature`` each
    gets "final_curvature", ``euler_curvature`` of its final checkpoint (seed 0 of the estimate's draws)."""
    out: dict[tuple[str, str, str], dict[int, dict]] = defaultdict(dict)
    for path in sorted(root.glob("*/*/*/seed*/metrics.json")):
        target, sampler, loss, seed = path.parent.relative_to(root).parts
        metrics = read_json(path)
        if curvature:
            run = BridgeRun.load(path.parent / CHECKPOINT)
            metrics["final_curvature"] = euler_curvature(run.model, run.target, torch.Generator().manual_seed(0))
        out[(target, sampler, loss)][int(seed.removeprefix("seed"))] = metrics
    return out


def stat(values) -> str:
    return mean_std(values).text(".2f", ".2f", show_n=False)


def cell_row(key: tuple[str, str, str], by_seed: dict[int, dict]) -> str:
    ms = list(by_seed.values())
    final = [stat(m.get(k) for m in ms) for k, _ in METRICS]
    best = [stat((m.get("best") or {}).get(k) for m in ms) for k, _ in METRICS]
    at = ", ".join(str((m.get("best") or {}).get("iteration", "–")) for m in ms)
    div = [f"seed {s}: {m['divergence']} at {m['diverged_at']}" for s, m in by_seed.items() if m.get("diverged_at")]
    curv = ", ".join(f"{m['final_curvature']:.2f}" for m in ms if m.get("final_curvature") is not None) or "–"
    cols = [*key, str(len(ms)), *final, *best, at, "; ".join(div) or "none", curv]
    return f"| {' | '.join(cols)} |"


def orderings(cells: dict[tuple[str, str, str], dict[int, dict]]) -> list[str]:
    lines = []
    for target, sampler in dict.fromkeys((t, s) for t, s, _ in cells):
        mine = {loss: seeds for (t, s, loss), seeds in cells.items() if (t, s) == (target, sampler)}
        for label, pick in (("final", lambda m: m.get("elbo")), ("best", lambda m: (m.get("best") or {}).get("elbo"))):
            means = {loss: mean_std(pick(m) for m in seeds.values()).mean for loss, seeds in mine.items()}
            order = " > ".join(f"{loss} ({means[loss]:.2f})" for loss in sorted(means, key=means.get, reverse=True))
            lines.append(f"- {target}, {sampler}, {label} ELBO: {order}")
        for other in ("lv", "rkl-r"):
            if "rkl-ld" in mine and other in mine:
                common = sorted(set(mine["rkl-ld"]) & set(mine[other]))
                diffs = [mine["rkl-ld"][s]["elbo"] - mine[other][s]["elbo"] for s in common]
                text = ", ".join(f"{d:+.2f}" for d in diffs)
                lines.append(f"- {target}, {sampler}: final ELBO rKL-LD − {other} per seed {common}: {text}")
    return lines


def report(root: Path, curvature: bool = False) -> str:
    cells = runs(root, curvature)
    head = " | ".join(f"final {name}" for _, name in METRICS) + " | " + " | ".join(f"best {n}" for _, n in METRICS)
    lines = [
        f"| target | sampler | loss | seeds | {head} | best at iteration | diverged | step × curvature (final) |",
        "|---|---|---|---|" + "---|" * (2 * len(METRICS) + 3),
    ]
    lines += [cell_row(key, dict(sorted(seeds.items()))) for key, seeds in cells.items()]
    return "\n".join(lines + ["", *orderings(cells)]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="Write the Markdown here (default: stdout).")
    ap.add_argument("--curvature", action="store_true", help="Estimate the Euler stability of every final checkpoint.")
    a = ap.parse_args()
    if not a.root.is_dir():
        ap.error(f"{a.root} is not a directory")
    text = report(a.root, a.curvature)
    if a.out:
        write_text_atomic(a.out, text)
    print(text, end="")


if __name__ == "__main__":
    main()
