"""``diffloss optimal-loss``: the optimal (Bayes) denoising loss J*(s) of a data set, as a curve over noise levels."""

from __future__ import annotations

import csv
import io
import math

import click
import numpy as np
import torch

from diffloss.cli.common import log_spaced, parse_floats
from diffloss.data import Dataset, load_dataset, load_labels_file
from diffloss.errors import DifflossError
from diffloss.io import write_json_atomic, write_text_atomic
from diffloss.optimal.cache import cache_key, load_cached, store_cached
from diffloss.optimal.result import OptimalLossResult
from diffloss.optimal.sharded import init_from_env
from diffloss.process import Process, get_process
from diffloss.target import Target, get_target

ESTIMATORS = ("exact", "stochastic")
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def parse_bytes(text: str) -> int:
    """``"512M"``, ``"2G"``, ``"65536"`` -> bytes."""
    t = text.strip().lower().removesuffix("b")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    try:
        value = float(t[: len(t) - len(unit)])
    except ValueError:
        raise DifflossError(f"--max-memory: {text!r} is not a size; write e.g. 512M or 2G") from None
    if not math.isfinite(value) or value <= 0:
        raise DifflossError(f"--max-memory must be > 0, got {text!r}")
    return int(value * _UNITS[unit])


def resolve_levels(process: Process, sigmas: str | None, times: str | None, levels: int | None) -> np.ndarray:
    """Noise-to-signal ratios from ``--sigmas``, ``--t`` (process times) or ``--levels K`` (log-spaced)."""
    given = [name for name, v in (("--sigmas", sigmas), ("--t", times), ("--levels", levels)) if v is not None]
    if len(given) > 1:
        raise DifflossError(f"give only one of --sigmas, --t and --levels (got {' and '.join(given)})")
    if times is not None:
        t = np.asarray(parse_floats(times, "--t"))
        bad = t[(t < process.t_min) | (t > process.t_max)]
        if len(bad):
            raise DifflossError(
                f"--t: {bad[0]:g} is outside the time range [{process.t_min:g}, {process.t_max:g}] of {process.name}"
            )
        s = process.nsr(t).numpy()
        bad = t[~(np.isfinite(s) & (s > 0))]
        if len(bad):
            raise DifflossError(f"--t: at t = {bad[0]:g} the {process.name} process has s = σ/α = 0 or ∞; move inside")
        return s
    s = np.asarray(parse_floats(sigmas, "--sigmas", positive=True) if sigmas else log_spaced(levels or 32))
    process.t_of_nsr(s)  # refuses levels the process never reaches
    return s


def _dataset(data: str, labels_file: str | None, conditional: bool) -> Dataset:
    ds = load_dataset(data)
    if labels_file is not None:
        ds = ds.with_labels(load_labels_file(labels_file))
    if (conditional or labels_file is not None) and ds.labels is None:
        raise DifflossError(f"--conditional: {data} has no labels; give them with --labels FILE")
    return ds


def _estimate(ds: Dataset, sigmas: np.ndarray, opts: dict, conditional: bool, progress: bool) -> OptimalLossResult:
    labels = ds.labels if conditional else None
    if opts["estimator"] == "stochastic":
        from diffloss.optimal.stochastic import stochastic_optimal_loss

        return stochastic_optimal_loss(
            ds.x,
            sigmas,
            subset_size=opts["subset_size"],
            correction=opts["correction"],
            queries=opts["queries"],
            seed=opts["seed"],
            labels=labels,
            progress=progress,
        )
    kwargs = dict(
        queries=opts["queries"],
        rel_stderr=opts["rel_stderr"],
        max_queries=opts["max_queries"],
        seed=opts["seed"],
        labels=labels,
        all_rows=opts["all_rows"],
        max_memory=opts["max_memory"],
        progress=progress,
    )
    from diffloss.optimal.sharded import DistributedRows, spawn_optimal_loss

    if torch.distributed.is_initialized():
        from diffloss.optimal.exact import exact_optimal_loss

        return exact_optimal_loss(ds.x, sigmas, partition=DistributedRows(), **kwargs)
    return spawn_optimal_loss(ds.x, sigmas, workers=opts["workers"], threads=opts["threads"], **kwargs)


def report(result: OptimalLossResult, ds: Dataset, process: Process, target: Target) -> dict:
    """The JSON document of the §7 contract (plus extras)."""
    loss, loss_se = result.in_target(process, target)
    t = process.t_of_nsr(result.sigmas).numpy()
    levels = [
        {
            "sigma": float(result.sigmas[i]),
            "logsnr": float(result.logsnr[i]),
            "t": float(t[i]),
            "x0_mse": float(result.x0_mse[i]),
            "loss": float(loss[i]),
            "stderr": float(result.stderr[i]),
            "loss_stderr": float(loss_se[i]),
        }
        for i in range(len(result.sigmas))
    ]
    out = {
        "n_data": result.n_data,
        "dim": result.dim,
        "process": process.name,
        "target": target.name,
        "estimator": result.estimator,
        "units": "per-dimension mean",
        "levels": levels,
        "data": {"name": ds.name, "fingerprint": ds.fingerprint, "variance_per_dim": ds.info()["variance_per_dim"]},
        "queries": result.n_queries,
        "seed": result.meta.get("seed"),
        "process_config": process.to_dict(),
        "meta": result.meta,
    }
    if result.bias is not None:
        out["bias"] = result.bias.tolist()
    if result.per_class is not None:
        f = result.loss_factor(process, target)
        out["per_class"] = {}
        for c, curve in result.per_class.items():
            entry = {"x0_mse": curve.tolist(), "loss": (curve * f).tolist()}
            if result.per_class_stderr is not None:
                entry["stderr"] = result.per_class_stderr[c].tolist()
            out["per_class"][str(c)] = entry
    return out


def _csv_text(doc: dict) -> str:
    buf = io.StringIO()
    cols = ["sigma", "logsnr", "t", "x0_mse", "stderr", "loss", "loss_stderr"]
    w = csv.writer(buf)
    w.writerow(cols)
    for lv in doc["levels"]:
        w.writerow([repr(lv[c]) for c in cols])
    return buf.getvalue()


def _table(doc: dict) -> str:
    tgt = doc["target"]
    head = f"{'s':>10} {'logSNR':>8} {'t':>10} {'J*_x0':>12} {'stderr':>10} {'J*_' + tgt:>12}"
    lines = [
        f"optimal loss of {doc['data']['name']} (N = {doc['n_data']}, D = {doc['dim']}), {doc['estimator']}, "
        f"{doc['queries']} queries; per-dimension MSE; process {doc['process']}",
        head,
    ]
    for lv in doc["levels"]:
        lines.append(
            f"{lv['sigma']:>10.4g} {lv['logsnr']:>8.3f} {lv['t']:>10.4g} {lv['x0_mse']:>12.5g} "
            f"{lv['stderr']:>10.2g} {lv['loss']:>12.5g}"
        )
    lines.append(f"data variance per dim (the s -> ∞ limit of J*_x0): {doc['data']['variance_per_dim']:.5g}")
    return "\n".join(lines)


@click.command("optimal-loss")
@click.option("--data", required=True, help="Built-in name (mnist, digits, ...), .npy/.npz file or image folder.")
@click.option("--sigmas", default=None, help="Comma-separated noise-to-signal ratios s = σ/α (σ itself for VE/EDM).")
@click.option("--t", "times", default=None, help="Comma-separated process times instead of --sigmas.")
@click.option(
    "--levels", type=int, default=None, help="K log-spaced s over [0.002, 80] (default 32 when no --sigmas/--t)."
)
@click.option("--process", default="ve", show_default=True, help="ve | vp | vp-cosine | edm | flow.")
@click.option("--target", default="x0", show_default=True, help="x0 | eps | v | score | flow: units of `loss`.")
@click.option("--estimator", default="exact", show_default=True, help="exact | stochastic.")
@click.option("--queries", type=int, default=None, help="Number of (x0, ε) draws [default: chosen for --rel-stderr].")
@click.option(
    "--rel-stderr",
    type=float,
    default=0.02,
    show_default=True,
    help="Auto queries: stderr <= this x max(J*, 1% of the data variance) at every level.",
)
@click.option("--max-queries", type=int, default=20000, show_default=True, help="Cap on automatic queries.")
@click.option("--all-rows", is_flag=True, help="Exact: use every row once as x0 (Q = N; lower variance).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (queries and noise).")
@click.option("--labels", "labels_file", default=None, help=".npy/.npz of N integer labels: conditional loss.")
@click.option("--conditional", is_flag=True, help="Use the data's own labels (mnist, digits): conditional loss.")
@click.option("--subset-size", type=int, default=None, help="Stochastic: subset size L [default min(N, 1000)].")
@click.option("--correction", default=None, help="Stochastic: cDOL coefficient C [default 4N/L; inf = SNIS].")
@click.option("--max-memory", default=None, help="Exact: working-memory bound per chunk, e.g. 512M.")
@click.option("--workers", type=int, default=1, show_default=True, help="Exact: split rows over N local processes.")
@click.option("--threads", type=int, default=1, show_default=True, help="Torch threads per process (see above).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the JSON report here.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None, help="Write a CSV table here.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None, help="Write a log-log PNG here.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the results cache.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def command(
    data, sigmas, times, levels, process, target, estimator, queries, rel_stderr, max_queries, all_rows, seed,
    labels_file, conditional, subset_size, correction, max_memory, workers, threads, json_out, csv_out, plot_out,
    no_cache, quiet,
) -> None:  # fmt: skip
    """Compute the optimal loss J*(s): the smallest expected denoising MSE any model can reach on DATA.

    For the empirical distribution of the N rows, the best x0-predictor at noise-to-signal ratio s = σ/α is
    the posterior mean over rows, and J*(s) = E||x0 - E[x0 | x_t]||^2 / D (per-dimension mean). It rises
    from 0 (small s, no duplicate rows) to the per-dimension data variance (large s). `loss` is the same in
    the units of --target under --process (e.g. ε-MSE = SNR * x0-MSE); every value comes with its Monte
    Carlo standard error.

    The exact estimator uses the full posterior over all rows, Monte Carlo only over (x0, ε); `--workers N`
    or torchrun split the rows over processes with identical results. `--estimator stochastic` uses a random
    subset of L rows per query (DOL / cDOL / SNIS), for data too large for the exact pass. Parallelism: prefer
    `--workers N` (row shards in N processes) over `--threads` (one thread per process by default: the
    per-level work is many small array passes, which scale poorly with intra-op threads on a busy machine). With labels
    (`--labels FILE` or `--conditional`) the posterior runs within each class: the conditional optimal loss,
    overall and per class. Results are cached by data fingerprint and settings under $DIFFLOSS_CACHE
    (default ~/.cache/diffloss).

    Example: diffloss optimal-loss --data mnist --levels 32 --json out/mnist.json --plot out/mnist.png
    """
    proc, tgt = get_process(process), get_target(target)
    if estimator not in ESTIMATORS:
        raise DifflossError(f"unknown estimator {estimator!r}; choose one of: {', '.join(ESTIMATORS)}")
    if queries is not None and queries < 1:
        raise DifflossError(f"--queries must be >= 1, got {queries}")
    if max_queries < 2:
        raise DifflossError(f"--max-queries must be >= 2, got {max_queries}")
    if not rel_stderr > 0:
        raise DifflossError(f"--rel-stderr must be > 0, got {rel_stderr}")
    if workers < 1 or threads < 1:
        raise DifflossError(f"--workers and --threads must be >= 1, got {workers} and {threads}")
    torch.set_num_threads(threads)
    s = resolve_levels(proc, sigmas, times, levels)
    ds = _dataset(data, labels_file, conditional)
    conditional = conditional or labels_file is not None
    opts = {
        "estimator": estimator,
        "queries": queries,
        "seed": seed,
        "rel_stderr": rel_stderr,
        "max_queries": max_queries,
        "all_rows": all_rows,
        "conditional": conditional,
        "sigmas": s.tolist(),
        "max_memory": parse_bytes(max_memory) if max_memory else None,
        "workers": workers,
        "threads": threads,
    }
    if estimator == "stochastic":
        opts["subset_size"] = subset_size if subset_size is not None else min(ds.n, 1000)
        if not 1 <= opts["subset_size"] <= ds.n:
            raise DifflossError(f"--subset-size must be in [1, N = {ds.n}], got {opts['subset_size']}")
        c = None
        if correction is not None:
            try:
                c = float(correction)
            except ValueError:
                raise DifflossError(f"--correction: {correction!r} is not a number; give e.g. 40 or inf") from None
            if not c > 0:
                raise DifflossError(f"--correction must be > 0 (or inf), got {correction!r}")
        opts["correction"] = c
    settings = {k: v for k, v in opts.items() if k not in ("max_memory", "workers", "threads")}
    key = cache_key(ds.fingerprint, settings)
    distributed = estimator == "exact" and init_from_env()  # under torchrun: every rank scans its share of rows
    use_cache = not no_cache and not distributed  # ranks must agree on whether to compute
    result = load_cached(key) if use_cache else None
    if result is None:
        result = _estimate(ds, s, opts, conditional, progress=not quiet and _is_main_rank())
        if not no_cache and _is_main_rank():  # rank 0 may still store it for later single-process runs
            store_cached(key, result)
    if not _is_main_rank():
        return
    doc = report(result, ds, proc, tgt)
    if json_out:
        write_json_atomic(json_out, doc)
    if csv_out:
        write_text_atomic(csv_out, _csv_text(doc))
    if plot_out:
        from diffloss.optimal.plot import plot_optimal_loss

        plot_optimal_loss(result, proc, tgt, doc["data"]["variance_per_dim"], plot_out)
    if not quiet:
        click.echo(_table(doc))


def _is_main_rank() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
