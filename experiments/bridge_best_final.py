"""The final and the best-checkpoint metrics of a bridge benchmark root, per (target, sampler, loss), as Markdown.

Usage: python experiments/bridge_best_final.py ROOT [--out FILE]

ROOT is a ``diffloss bridge bench`` root (``<target>/<sampler>/<loss>/seed<k>/metrics.json``). Per cell over its
seeds: mean ± std (ddof 1) of the final ELBO, log Ẑ and ESS, and of the best evaluated ELBO's (``metrics.json``
"best", the checkpoint the reference reports), the iterations the best was reached at, and the divergences (a
diverged run's final metrics are those of its last good checkpoint; it is counted, and its best stays in the best
columns). Then, per (target, sampler), the losses ordered by mean final and by mean best ELBO, and the per-seed
differences rKL-LD − LV and rKL-LD − rKL-R (same seed: same initialisation, so the difference is paired).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from diffloss.io import write_text_atomic
from diffloss.runs import mean_std, read_json

METRICS = (("elbo", "ELBO"), ("log_z", "log Ẑ"), ("ess", "ESS"))


def runs(root: Path) -> dict[tuple[str, str, str], dict[int, dict]]:
    """{(target, sampler, loss): {seed: metrics.json}} of the finished runs under ``root``."""
    out: dict[tuple[str, str, str], dict[int, dict]] = defaultdict(dict)
    for path in sorted(root.glob("*/*/*/seed*/metrics.json")):
        target, sampler, loss, seed = path.parent.relative_to(root).parts
        out[(target, sampler, loss)][int(seed.removeprefix("seed"))] = read_json(path)
    return out


def stat(values) -> str:
    return mean_std(values).text(".2f", ".2f", show_n=False)


def cell_row(key: tuple[str, str, str], by_seed: dict[int, dict]) -> str:
    ms = list(by_seed.values())
    final = [stat(m.get(k) for m in ms) for k, _ in METRICS]
    best = [stat((m.get("best") or {}).get(k) for m in ms) for k, _ in METRICS]
    at = ", ".join(str((m.get("best") or {}).get("iteration", "–")) for m in ms)
    div = [f"seed {s}: {m['divergence']} at {m['diverged_at']}" for s, m in by_seed.items() if m.get("diverged_at")]
    cols = [*key, str(len(ms)), *final, *best, at, "; ".join(div) or "none"]
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


def report(root: Path) -> str:
    cells = runs(root)
    head = " | ".join(f"final {name}" for _, name in METRICS) + " | " + " | ".join(f"best {n}" for _, n in METRICS)
    lines = [
        f"| target | sampler | loss | seeds | {head} | best at iteration | diverged |",
        "|---|---|---|---|" + "---|" * (2 * len(METRICS) + 2),
    ]
    lines += [cell_row(key, dict(sorted(seeds.items()))) for key, seeds in cells.items()]
    return "\n".join(lines + ["", *orderings(cells)]) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="Write the Markdown here (default: stdout).")
    a = ap.parse_args()
    if not a.root.is_dir():
        ap.error(f"{a.root} is not a directory")
    text = report(a.root)
    if a.out:
        write_text_atomic(a.out, text)
    print(text, end="")


if __name__ == "__main__":
    main()
