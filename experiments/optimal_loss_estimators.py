"""Estimator report: exact vs DOL / cDOL / SNIS on MNIST, error against compute and the C sweep.

Regenerates reports/optimal_loss_estimators.md, its PNG plots and the raw numbers
(reports/optimal_loss_estimators.json) with fixed seeds:

    PYTHONPATH=src python experiments/optimal_loss_estimators.py

Single-threaded torch (the machine is shared), about 10 minutes of estimator calls. Finished runs are kept in the
JSON and reused on a re-run (a checkpoint); ``--fresh`` recomputes everything. The reference curve combines two
independent full-posterior passes over all 50k rows: ``diffloss.optimal.exact`` and the stochastic estimator at
L = N, C = 1 (which is exact), each with 4000 queries, weighted by inverse variance per level.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from diffloss.data import load_mnist
from diffloss.io import write_json_atomic
from diffloss.optimal.exact import exact_optimal_loss
from diffloss.optimal.stochastic import stochastic_optimal_loss
from diffloss.runs import pyplot, read_json, save_figure, write_report

REPORTS = Path(__file__).resolve().parents[1] / "reports"
SIGMAS = np.exp(np.linspace(math.log(0.5), math.log(50.0), 16))
TRUTH_QUERIES = 4000
EXACT_QUERIES = (64, 256, 1024)
SUBSETS = (100, 1000, 5000)
GRID_QUERIES = (256, 2048)
SWEEP_SUBSETS = (100, 1000)
SWEEP_KAPPAS = (0.25, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0)  # C = kappa * N / L, plus DOL (C = 1) and SNIS (C = inf)
SWEEP_QUERIES = 2048


def family_corrections(n: int, size: int) -> dict[str, float | None]:
    """The estimators compared at every L: DOL, the importance-sampling coefficient, the paper's 4N/L, SNIS."""
    return {"DOL (C=1)": 1.0, "cDOL C=(N-1)/(L-1)": (n - 1) / (size - 1), "cDOL C=4N/L": None, "SNIS": math.inf}


def run(cache: dict, key: str, x: np.ndarray, sigmas, **kwargs) -> dict:
    """One estimator call (exact without ``subset_size``), timed, memoized in ``cache`` under ``key``."""
    if key in cache:
        return cache[key]
    size = kwargs.get("subset_size", len(x))
    t0 = time.perf_counter()
    r = (
        stochastic_optimal_loss(x, sigmas, **kwargs)
        if "subset_size" in kwargs
        else exact_optimal_loss(x, sigmas, **kwargs)
    )
    seconds = time.perf_counter() - t0
    cache[key] = {
        "sigmas": list(map(float, r.sigmas)),
        "x0_mse": r.x0_mse.tolist(),
        "stderr": r.stderr.tolist(),
        "bias": None if r.bias is None else r.bias.tolist(),
        "estimator": r.estimator,
        "subset_size": size,
        "correction": r.meta.get("correction_value"),
        "queries": r.n_queries,
        "row_evals": r.n_queries * size,
        "seconds": seconds,
    }
    print(f"{key}: {seconds:.1f} s", flush=True)
    return cache[key]


def reference(runs: dict) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance weighted mean of the two independent exact passes, and its standard error."""
    a, b = runs["exact Q=4000"], runs["stochastic L=N C=1 Q=4000"]
    wa, wb = (1 / np.maximum(np.array(e["stderr"]), 1e-300) ** 2 for e in (a, b))
    mean = (wa * np.array(a["x0_mse"]) + wb * np.array(b["x0_mse"])) / (wa + wb)
    return mean, 1 / np.sqrt(wa + wb)


def rms_error(entry: dict, truth: np.ndarray, var: float) -> float:
    """Root-mean-square error over the levels, in units of the per-dimension data variance."""
    return float(np.sqrt(np.mean(((np.array(entry["x0_mse"]) - truth) / var) ** 2)))


def compute(fresh: bool) -> dict:
    path = REPORTS / "optimal_loss_estimators.json"
    cache = {} if fresh or not path.exists() else read_json(path)["runs"]
    x = load_mnist().x
    n = len(x)

    def save():
        write_json_atomic(path, {"n": n, "dim": x.shape[1], "sigmas": SIGMAS.tolist(), "runs": cache})

    run(cache, f"exact Q={TRUTH_QUERIES}", x, SIGMAS, queries=TRUTH_QUERIES, seed=0)
    save()
    kw = dict(subset_size=n, correction=1.0, queries=TRUTH_QUERIES, seed=0)
    run(cache, f"stochastic L=N C=1 Q={TRUTH_QUERIES}", x, SIGMAS, **kw)
    save()
    for q in EXACT_QUERIES:
        run(cache, f"exact Q={q}", x, SIGMAS, queries=q, seed=1)
    save()
    for size in SUBSETS:
        for name, c in family_corrections(n, size).items():
            for q in GRID_QUERIES:
                run(cache, f"{name} L={size} Q={q}", x, SIGMAS, subset_size=size, correction=c, queries=q, seed=2)
            save()
    var = float(((x - x.mean(0, dtype=np.float64)) ** 2).mean())
    t, t_err = reference(cache)
    sweep_sigmas = [float(SIGMAS[np.argmin(np.abs(t / var - f))]) for f in (0.05, 0.5)]
    for size in SWEEP_SUBSETS:
        cs = {"DOL": 1.0, **{f"kappa={k:g}": k * n / size for k in SWEEP_KAPPAS}, "SNIS": math.inf}
        for name, c in cs.items():
            kw = dict(subset_size=size, correction=c, queries=SWEEP_QUERIES, seed=3)
            run(cache, f"sweep {name} L={size}", x, sweep_sigmas, **kw)
        save()
    return {"n": n, "var": var, "runs": cache, "sweep_sigmas": sweep_sigmas, "truth": t, "truth_err": t_err}


def plot(fig, name: str) -> str:
    save_figure(fig, REPORTS / name, dpi=110, bbox_inches="tight")
    return name


def curves_plot(res: dict) -> str:
    runs, n = res["runs"], res["n"]
    fig, ax = pyplot().subplots(figsize=(6.5, 4.5))
    ax.plot(SIGMAS, res["truth"], "k-", lw=2, label=f"exact, all {n} rows (reference)")
    for name, style in zip(family_corrections(n, 1000), ("C0o--", "C1s--", "C2^--", "C3v--")):
        e = runs[f"{name} L=1000 Q=2048"]
        ax.plot(SIGMAS, e["x0_mse"], style, ms=4, label=f"{name}, L=1000")
    ax.axhline(res["var"], color="gray", ls=":", label="per-dimension data variance")
    ax.set(xscale="log", yscale="log", xlabel="noise-to-signal ratio s", ylabel="J*(s), per-dimension x0 MSE")
    ax.set_ylim(1e-6, 0.5)
    ax.legend(fontsize=8)
    ax.set_title("MNIST train (50k): optimal x0 loss")
    return plot(fig, "optimal_loss_estimators_curves.png")


def error_plot(res: dict) -> str:
    """Left: RMS error over the levels / var; right: |relative error| at the low sweep level, against compute."""
    runs, n, var = res["runs"], res["n"], res["var"]
    truth = res["truth"]
    i_low = list(SIGMAS).index(res["sweep_sigmas"][0])
    metrics = (
        ("RMS error over levels / var", lambda e: rms_error(e, truth, var)),
        (
            f"|relative error| at s = {SIGMAS[i_low]:.3g} (J*/var = {truth[i_low] / var:.2f})",
            lambda e: abs(e["x0_mse"][i_low] - truth[i_low]) / truth[i_low],
        ),
    )
    fig, axes = pyplot().subplots(1, 2, figsize=(12, 4.6))
    for ax, (ylabel, metric) in zip(axes, metrics):
        ex = [runs[f"exact Q={q}"] for q in EXACT_QUERIES]
        ax.plot([e["row_evals"] for e in ex], [metric(e) for e in ex], "k-o", label="exact (L=N)")
        for (name, _), color in zip(family_corrections(n, 1000).items(), ("C0", "C1", "C2", "C3")):
            for q, marker in zip(GRID_QUERIES, ("o", "s")):
                es = [runs[f"{name} L={size} Q={q}"] for size in SUBSETS]
                ax.plot(
                    [e["row_evals"] for e in es],
                    [metric(e) for e in es],
                    color=color,
                    marker=marker,
                    ls="--" if q == GRID_QUERIES[0] else "-",
                    label=f"{name}, Q={q}",
                )
        ax.set(xscale="log", yscale="log", xlabel="compute: queries x rows scored", ylabel=ylabel)
    axes[0].legend(fontsize=7)
    fig.suptitle("error vs compute (subset estimators: L = 100, 1000, 5000 left to right)")
    return plot(fig, "optimal_loss_estimators_error_vs_compute.png")


def sweep_plot(res: dict) -> str:
    runs, n = res["runs"], res["n"]
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for ax, (i, s) in zip(axes, enumerate(res["sweep_sigmas"])):
        ref = res["truth"][list(SIGMAS).index(s)]
        for size, color in zip(SWEEP_SUBSETS, ("C0", "C1")):
            ks = [size / n] + list(SWEEP_KAPPAS)
            es = [runs[f"sweep DOL L={size}"]] + [runs[f"sweep kappa={k:g} L={size}"] for k in SWEEP_KAPPAS]
            rel = [(e["x0_mse"][i] - ref) / ref for e in es]
            err = [2 * e["stderr"][i] / ref for e in es]
            ax.errorbar(ks, rel, yerr=err, color=color, marker="o", capsize=3, label=f"L={size}")
        ax.axhline(0, color="k", lw=0.8)
        ax.axvline(4, color="gray", ls="--", lw=0.8, label="C = 4N/L")
        ax.set(xscale="log", xlabel="C·L/N  (DOL: L/N; SNIS, off the chart: see the table)")
        ax.set_ylabel("relative error (est − exact) / exact")
        ax.set_title(f"s = {s:.3g}, J*/var = {ref / res['var']:.2f}")
        ax.legend(fontsize=7)
    return plot(fig, "optimal_loss_estimators_c_sweep.png")


def fmt(v: float) -> str:
    return f"{v:+.1%}" if abs(v) < 10 else f"{v:+.0f}x"


def level_table(res: dict, size: int, q: int) -> str:
    """Relative error (est − ref) / ref per level of every estimator family at one (L, Q)."""
    runs, n, truth = res["runs"], res["n"], res["truth"]
    names = list(family_corrections(n, size))
    head = "| s | J*/var (ref) | ref rel. stderr | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (3 + len(names))]
    for i, s in enumerate(SIGMAS):
        cells = [fmt((runs[f"{m} L={size} Q={q}"]["x0_mse"][i] - truth[i]) / truth[i]) for m in names]
        rel_se = res["truth_err"][i] / truth[i]
        lines.append(f"| {s:.3g} | {truth[i] / res['var']:.2e} | {rel_se:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compute_table(res: dict) -> str:
    runs, n, var, truth = res["runs"], res["n"], res["var"], res["truth"]
    lines = ["| estimator | L | Q | rows scored Q·L | wall time (s) | RMS error / var |", "|---|---|---|---|---|---|"]
    for q in EXACT_QUERIES:
        e = runs[f"exact Q={q}"]
        lines.append(
            f"| exact | {n} | {q} | {e['row_evals']:.2e} | {e['seconds']:.1f} | {rms_error(e, truth, var):.4f} |"
        )
    for name in family_corrections(n, 1000):
        for size in SUBSETS:
            for q in GRID_QUERIES:
                e = runs[f"{name} L={size} Q={q}"]
                lines.append(
                    f"| {name} | {size} | {q} | {e['row_evals']:.2e} | {e['seconds']:.1f} | "
                    f"{rms_error(e, truth, var):.4f} |"
                )
    return "\n".join(lines)


def sweep_table(res: dict) -> str:
    runs, n, truth = res["runs"], res["n"], res["truth"]
    idx = [list(SIGMAS).index(s) for s in res["sweep_sigmas"]]
    head = "| L | C | C·L/N | " + " | ".join(f"rel. error at s = {s:.3g} (± 1 stderr)" for s in res["sweep_sigmas"])
    lines = [head + " |", "|---|---|---|---|---|"]
    for size in SWEEP_SUBSETS:
        names = ["DOL"] + [f"kappa={k:g}" for k in SWEEP_KAPPAS] + ["SNIS"]
        for name in names:
            e = runs[f"sweep {name} L={size}"]
            c = math.inf if e["correction"] == "inf" else float(e["correction"])
            cells = [
                f"{fmt((e['x0_mse'][j] - truth[i]) / truth[i])} ± {e['stderr'][j] / truth[i]:.1%}"
                for j, i in enumerate(idx)
            ]
            lines.append(f"| {size} | {c:.4g} | {c * size / n:.3g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bias_table(res: dict) -> str:
    """Reported bias vs actual error (both relative to the reference) at the two sweep levels, Q = 2048."""
    runs, n, truth = res["runs"], res["n"], res["truth"]
    idx = [list(SIGMAS).index(s) for s in res["sweep_sigmas"]]
    cols = " | ".join(f"s = {s:.3g}: actual error | reported bias" for s in res["sweep_sigmas"])
    lines = [f"| estimator | L | {cols} |", "|---|---|---|---|---|---|"]
    for name in family_corrections(n, 1000):
        for size in SUBSETS:
            e = runs[f"{name} L={size} Q=2048"]
            cells = [f"{fmt((e['x0_mse'][i] - truth[i]) / truth[i])} | {fmt(e['bias'][i] / truth[i])}" for i in idx]
            lines.append(f"| {name} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def agreement(res: dict) -> tuple[float, float]:
    """Largest |z| between the two independent exact passes, and the largest relative stderr of the reference
    over the levels with J* > 1% of the data variance."""
    a, b = res["runs"][f"exact Q={TRUTH_QUERIES}"], res["runs"][f"stochastic L=N C=1 Q={TRUTH_QUERIES}"]
    z = (np.array(a["x0_mse"]) - b["x0_mse"]) / np.hypot(a["stderr"], b["stderr"])
    mask = res["truth"] > 0.01 * res["var"]
    return float(np.abs(z).max()), float((res["truth_err"][mask] / res["truth"][mask]).max())


def crossing(res: dict, size: int, level: int) -> float:
    """C·L/N at which the sweep's relative error at sweep level ``level`` crosses 0 (log-linear interpolation;
    inf if it stays negative)."""
    runs, n = res["runs"], res["n"]
    ref = res["truth"][list(SIGMAS).index(res["sweep_sigmas"][level])]
    ks = [size / n, *SWEEP_KAPPAS]
    errs = [runs[f"sweep DOL L={size}"]["x0_mse"][level] - ref] + [
        runs[f"sweep kappa={k:g} L={size}"]["x0_mse"][level] - ref for k in SWEEP_KAPPAS
    ]
    for (k0, e0), (k1, e1) in zip(zip(ks, errs), zip(ks[1:], errs[1:])):
        if e0 < 0 <= e1:
            return math.exp(math.log(k0) + (math.log(k1) - math.log(k0)) * (-e0) / (e1 - e0))
    return math.inf


def findings(res: dict) -> str:
    runs, truth = res["runs"], res["truth"]
    s_low, s_mid = res["sweep_sigmas"]
    i_low, i_mid = (list(SIGMAS).index(s) for s in res["sweep_sigmas"])

    def rel(key: str, i: int) -> str:
        return fmt((runs[key]["x0_mse"][i] - truth[i]) / truth[i])

    def se(key: str, i: int) -> str:
        return f"{runs[key]['stderr'][i] / truth[i]:.1%}"

    def bias(key: str, i: int) -> str:
        return fmt(runs[key]["bias"][i] / truth[i])

    def sweep(name: str, size: int, level: int) -> str:
        e = runs[f"sweep {name} L={size}"]
        i = (i_low, i_mid)[level]
        return fmt((e["x0_mse"][level] - truth[i]) / truth[i])

    cross = {(size, lv): crossing(res, size, lv) for size in SWEEP_SUBSETS for lv in (0, 1)}
    t_exact = runs[f"exact Q={TRUTH_QUERIES}"]["seconds"]
    t_ln = runs[f"stochastic L=N C=1 Q={TRUTH_QUERIES}"]["seconds"]

    def c(x: float) -> str:
        return "> 64" if math.isinf(x) else f"≈ {x:.2g}"

    dol_mid, dol_low = rel("DOL (C=1) L=1000 Q=2048", i_mid), rel("DOL (C=1) L=1000 Q=2048", i_low)
    mid100, mid1000, low100, low1000 = (c(cross[k]) for k in ((100, 1), (1000, 1), (100, 0), (1000, 0)))
    k4 = [sweep("kappa=4", 100, 1), sweep("kappa=4", 1000, 1), sweep("kappa=4", 1000, 0)]
    is_low = [rel(f"cDOL C=(N-1)/(L-1) L={size} Q=2048", i_low) for size in SUBSETS]

    return f"""## What we saw

1. **Every subset estimator is fine where J* is near the data variance and biased where it is small.** At
   L = 1000, for s ≥ 7.9 (J* ≥ 89% of var) all of them are within 2% of the reference. The trouble is s ≲ 3
   on MNIST, where a noisy sample's posterior sits on a handful of near neighbours out of 50k: a random subset
   of L rows rarely contains them, so the estimate depends on how the source row is weighted, i.e. on C.
2. **DOL (C = 1) under-estimates J*, as the paper says, and by a lot**: at L = 1000 it is {dol_mid}
   at s = {s_mid:.3g} (J* = {truth[i_mid] / res["var"]:.0%} of var) and {dol_low} at s = {s_low:.3g}; the source row
   counts like one row among L instead of one among N.
3. **SNIS (C = ∞) over-estimates J* at small s, without bound**: {rel("SNIS L=1000 Q=2048", i_low)} at s = {s_low:.3g}
   and {rel("SNIS L=1000 Q=2048", 0)} at s = {SIGMAS[0]:.2g} (L = 1000): without the source row nothing in the
   subset is close to x, so the estimate cannot go to 0 with s.
4. **C = 4N/L is a good compromise at mid-range s but not a constant of nature.** The C sweep puts the
   zero-bias coefficient at C·L/N {mid100} for L = 100 and {mid1000} for L = 1000 at s = {s_mid:.3g}, but at
   C·L/N {low100} (L = 100) and {low1000} (L = 1000) at s = {s_low:.3g}. So 4N/L is right for L = 100 at
   s = {s_mid:.3g} ({k4[0]}), over-corrects at L = 1000 ({k4[1]}), and under-corrects at smaller s ({k4[2]} at
   s = {s_low:.3g}, L = 1000). The best C grows as s
   shrinks and as L/N shrinks. The importance-sampling coefficient C = (N−1)/(L−1) (the only consistent one:
   exact at L = N) is always on the low side on MNIST: the subset sums of kernel weights are so heavy-tailed
   that their typical value is far below their mean, and the ratio estimator keeps over-weighting the source.
5. **The bias decays slowly in L**: cDOL C = (N−1)/(L−1) at s = {s_low:.3g} is {", ".join(is_low)}
   at L = 100, 1000, 5000: roughly
   L^(−0.3), not the 1/L of a textbook ratio estimator.
6. **Error against compute**: in RMS error over the levels (dominated by mid/large s), cDOL with L = 1000–5000
   and Q = 2048 (2–10 M rows scored) matches or beats the exact estimator at 3–13 M rows (Q = 64–256), because it
   can afford 8–32× more queries. At small s (right panel) the subset estimators' error is mostly bias, which
   only a lucky C removes (at s = {s_low:.3g}, L = 5000: 4N/L is at {rel("cDOL C=4N/L L=5000 Q=2048", i_low)},
   C = (N−1)/(L−1) at {is_low[2]}), while the exact estimator's error is unbiased Monte Carlo noise consistent with
   its reported stderr ({rel("exact Q=256", i_low)} ± {se("exact Q=256", i_low)} and {rel("exact Q=1024", i_low)} ±
   {se("exact Q=1024", i_low)} at Q = 256 and 1024). On MNIST the exact pass is affordable anyway
   ({TRUTH_QUERIES} queries over all 50k rows took {t_exact:.0f} s single-threaded with `exact_optimal_loss`), so the
   stochastic estimators are for data sets far larger than MNIST, and their `bias` should be read before
   trusting small-s values. Per row scored the subset code is slower than the exact one (the same
   {TRUTH_QUERIES}-query full pass took {t_ln:.0f} s through `stochastic_optimal_loss` with L = N): it gathers
   the subset per draw and runs its float64 softmax passes unchunked.
7. **The reported bias is reliable at mid-range s and not at small s.** At s = {s_mid:.3g} it matches the
   actual error to within 4% of J* for every estimator (last table; e.g. DOL at L = 1000: actual
   {dol_mid}, reported {bias("DOL (C=1) L=1000 Q=2048", i_mid)}). At s = {s_low:.3g} it gets SNIS's
   over-estimate right and DOL's and C = (N−1)/(L−1)'s sign right but only part of their magnitude (C = (N−1)/(L−1)
   at L = 1000: actual {is_low[1]}, reported {bias("cDOL C=(N-1)/(L-1) L=1000 Q=2048", i_low)}), and for 4N/L
   it even has the wrong sign (L = 1000: actual {rel("cDOL C=4N/L L=1000 Q=2048", i_low)}, reported
   {bias("cDOL C=4N/L L=1000 Q=2048", i_low)}): the power law fitted on L/4..L does not see how much posterior
   mass the missing near neighbours carry. Where J* is a small fraction of var, treat it as a rough lower
   bound on |bias| of the consistent estimator, not as a correction.

## Where this disagrees with the paper

- The paper recommends C ≈ 4N/L; on MNIST that holds only around J* ≈ 40% of var and L/N ≈ 0.2% (L = 100). The
  zero-bias C depends on s and L (item 4); a single C cannot make cDOL unbiased over a whole curve.
- We could not read the paper's exact definition of the correction (only its limits: C = 1 is DOL, C → ∞ is
  SNIS); if its C scales the weights differently than "divide the source kernel by C", its 4N/L maps to a
  different point of our sweep. The sweep covers C·L/N from DOL to 64, so any such mapping can be read off.
- We could not check the paper's own accuracy figures (beyond its abstract, its text was not available to us).
  On MNIST every finite C leaves tens of percent of bias at s ≲ 2 (J* < 15% of var), shrinking only slowly
  with L; the paper's data (CIFAR-10, ImageNet) are larger and higher-dimensional, where this may differ.
"""


def report(res: dict, figs: list[str]) -> None:
    runs, n, var = res["runs"], res["n"], res["var"]
    minutes = sum(e["seconds"] for e in runs.values()) / 60
    zmax, worst_se = agreement(res)
    s_low, s_mid = res["sweep_sigmas"]
    frac_low, frac_mid = (res["truth"][list(SIGMAS).index(s)] / var for s in (s_low, s_mid))
    text = f"""# Optimal-loss estimators on MNIST: exact vs DOL, cDOL and SNIS

Regenerate everything here (numbers, tables, plots; fixed seeds) with the command below; the estimator calls
took {minutes:.0f} min in total, single-threaded on a shared 2-core machine (re-runs reuse finished calls from the
JSON unless `--fresh` is given):

    PYTHONPATH=src python experiments/optimal_loss_estimators.py --fresh

Raw numbers: [optimal_loss_estimators.json](optimal_loss_estimators.json). The exact estimator's variance (the
control variates, the all-rows mode) is compared in [optimal_loss_variance.md](optimal_loss_variance.md).

## Setup

- **Data**: MNIST train, N = {n} rows × D = 784, pixels mapped to [−1, 1]; per-dimension variance
  var = {var:.4f}. **Levels**: {len(SIGMAS)} noise-to-signal ratios s log-spaced over [0.5, 50] (at s = 0.5
  J* is already 2e-5·var on MNIST: below it every posterior sits on its source row).
- **Reference** (the "exact full-data curve"): two independent full-posterior passes over all {n} rows with
  {TRUTH_QUERIES} queries each, `diffloss.optimal.exact.exact_optimal_loss` (seed 0) and the stochastic estimator
  at L = N, C = 1 (which is exact), combined by inverse variance per level. They agree (largest |z| over the
  levels {zmax:.2f}); the reference's relative standard error is at most {worst_se:.1%} wherever J* > 1% of var,
  but grows to tens of percent at s ≤ 1 where J* is carried by rare close pairs (see the table).
- **Estimators** (`diffloss.optimal.stochastic`): each query (source row j, noise ε) is scored against its
  source row and L−1 uniformly drawn other rows, the source row's kernel divided by C:
  m̂ = (k_j·y_j/C + Σ k_i·y_i) / (k_j/C + Σ k_i). **DOL** C = 1; **cDOL** C = (N−1)/(L−1) (the
  importance-sampling coefficient: the others then estimate the full normalizer without bias; at L = N it is
  exact) and C = 4N/L (the paper's recommendation, the library default); **SNIS** C = ∞ (source row dropped).
  We could not read the paper's definition of its coefficient beyond these limits; this parametrization is ours.
- **Compute**: rows scored = queries × rows per query (Q·N for exact, Q·L for the subsets); the dominant cost
  is two fp32 Gram products (4·D flops per row) plus one softmax pass per level. Wall times are single-threaded
  on a machine shared with ~6 other jobs (load average 8–12 during this run): indicative only. They include
  ~1–2 s of setup per call (centering 50k rows) and, for the subset estimators, the bias extrapolation (up to
  three more softmax passes per level).
- Grid: L ∈ {{{", ".join(map(str, SUBSETS))}}} × Q ∈ {{{", ".join(map(str, GRID_QUERIES))}}} (seed 2, the same
  queries and subsets for every C), exact with Q ∈ {{{", ".join(map(str, EXACT_QUERIES))}}} (seed 1). C sweep:
  L ∈ {{{", ".join(map(str, SWEEP_SUBSETS))}}}, Q = {SWEEP_QUERIES} (seed 3) at
  s = {s_low:.3g} (J* = {frac_low:.1%} of var) and s = {s_mid:.3g} (J* = {frac_mid:.1%} of var),
  the levels nearest to 5% and 50%.

{findings(res)}

## J*(s) curves

![curves]({figs[0]})

Relative error (estimate − reference) / reference per level, L = 1000, Q = 2048:

{level_table(res, 1000, 2048)}

## Error against compute

![error vs compute]({figs[1]})

{compute_table(res)}

## The C sweep

![C sweep]({figs[2]})

{sweep_table(res)}

## The reported bias against the actual error (Q = 2048)

`bias` = (estimate − consistent-C estimate on the same queries) + the consistent estimator's bias extrapolated
from nested subsets of L−1, (L−1)/2 and (L−1)/4 rows (Aitken's Δ² on a power law in L with a finite-population
correction; details in the `stochastic_optimal_loss` docstring).

{bias_table(res)}
"""
    write_report(REPORTS / "optimal_loss_estimators.md", text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fresh", action="store_true", help="recompute every run instead of reusing the JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res = compute(args.fresh)
    figs = [curves_plot(res), error_plot(res), sweep_plot(res)]
    report(res, figs)
    print("figures:", figs, f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
