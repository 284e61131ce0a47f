"""``diffloss optimal-loss``: the optimal (Bayes) denoising loss J*(s) of a data set, as a curve over noise levels."""

from __future__ import annotations

import math

import click

from diffloss.cli.common import device_option, parse_floats, precision_option, threads_option
from diffloss.data import load_dataset, load_labels_file
from diffloss.device import resolve_device, world_from_env
from diffloss.errors import DifflossError
from diffloss.io import write_json_atomic, write_text_atomic
from diffloss.levels import nsr_levels
from diffloss.objective import build_objective
from diffloss.optimal import ESTIMATORS, data_jstar, objective_floor, optimal_loss
from diffloss.optimal.estimate import check_estimator_precision
from diffloss.optimal.exact import MAX_QUERIES, REL_STDERR
from diffloss.optimal.report import csv_text, table_text
from diffloss.optimal.sharded import is_main_process
from diffloss.process import process_from_spec
from diffloss.target import get_target

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


def parse_correction(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        raise DifflossError(f"--correction: {text!r} is not a number; give e.g. 40 or inf") from None


@click.command("optimal-loss")
@click.option("--data", required=True, help="Built-in name (mnist, digits, ...), .npy/.npz file or image folder.")
@click.option("--sigmas", default=None, help="Comma-separated noise-to-signal ratios s = σ/α (σ itself for VE/EDM).")
@click.option("--t", "times", default=None, help="Comma-separated process times instead of --sigmas.")
@click.option("--logsnr", default=None, help="Comma-separated log-SNRs λ = -2 ln s instead of --sigmas.")
@click.option(
    "--levels", type=int, default=None, help="K log-spaced s over [0.002, 80] (default 32 when no --sigmas/--t)."
)
@click.option("--process", default="ve", show_default=True, help="ve | vp | vp-cosine | edm | flow [:key=value,...].")
@click.option("--target", default="x0", show_default=True, help="x0 | eps | v | score | flow: units of `loss`.")
@click.option("--estimator", default="exact", show_default=True, help="exact | stochastic.")
@click.option(
    "--weighting",
    default=None,
    help="With --density: also the floor of this training objective (the spelling of `diffloss train`, e.g. "
    "constant:on=eps); default constant on --target.",
)
@click.option(
    "--density",
    default=None,
    help="Level density of the objective (e.g. uniform-logsnr:lam_min=-4,lam_max=4; default: the process's).",
)
@click.option("--queries", type=int, default=None, help="Number of (x0, ε) draws [default: chosen for --rel-stderr].")
@click.option(
    "--rel-stderr",
    type=float,
    default=REL_STDERR,
    show_default=True,
    help="Auto queries: stderr <= this x max(J*, 1% of the data variance) at every level.",
)
@click.option("--max-queries", type=int, default=MAX_QUERIES, show_default=True, help="Cap on automatic queries.")
@click.option("--all-rows", is_flag=True, help="Exact: use every row once as x0 (Q = N; lower variance).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (queries and noise).")
@click.option("--labels", "labels_file", default=None, help=".npy/.npz of N integer labels: conditional loss.")
@click.option("--conditional", is_flag=True, help="Use the data's own labels (mnist, digits): conditional loss.")
@click.option("--subset-size", type=int, default=None, help="Stochastic: subset size L [default min(N, 1000)].")
@click.option("--correction", default=None, help="Stochastic: cDOL coefficient C [default 4N/L; inf = SNIS].")
@click.option("--max-memory", default=None, help="Exact: memory bound per chunk, e.g. 512M (GPU memory on CUDA).")
@click.option("--workers", type=int, default=1, show_default=True, help="Exact: split rows over N local CPU processes.")
@threads_option
@device_option
@precision_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Write the JSON report here.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False), default=None, help="Write a CSV table here.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None, help="Write a log-log PNG here.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the results cache.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
def command(
    data, sigmas, times, logsnr, levels, process, target, estimator, weighting, density, queries, rel_stderr,
    max_queries, all_rows, seed, labels_file, conditional, subset_size, correction, max_memory, workers, threads,
    device, precision, json_out, csv_out, plot_out, no_cache, quiet,
) -> None:  # fmt: skip
    """Compute the optimal loss J*(s): the smallest expected denoising MSE any model can reach on DATA.

    For the empirical distribution of the N rows, the best x0-predictor at noise-to-signal ratio s = σ/α is
    the posterior mean over rows, and J*(s) = E||x0 - E[x0 | x_t]||^2 / D (per-dimension mean). It rises
    from 0 (small s, no duplicate rows) to the per-dimension data variance (large s). `loss` is the same in
    the units of --target under --process (e.g. ε-MSE = SNR * x0-MSE); every value comes with its Monte
    Carlo standard error. J* is defined at every s > 0 (give --sigmas or --logsnr anywhere; only --t is bounded by
    the process's time range; a level the process never reaches has no time, shown as -). Where no query saw
    posterior weight off its source row (small s), the estimate is 0 ± 0 and the report gives a 95% upper bound
    instead (`upper95`, shown as <BOUND).

    With --weighting and/or --density (the spellings of `diffloss train`), the report adds the floor of that
    training objective: E over levels from the density of weight × J* in --target units, the lowest mean loss
    `diffloss train` can log with it (quadrature over the density, refined until its error is below the Monte
    Carlo error).

    The exact estimator uses the full posterior over all rows, Monte Carlo only over (x0, ε); `--workers N`
    or torchrun split the rows over processes with identical results. `--estimator stochastic` uses a random
    subset of L rows per query (DOL / cDOL / SNIS), for data too large for the exact pass. Where: `--device`
    (auto = CUDA when present; under torchrun each rank uses its own GPU), `--precision tf32` for TF32 GEMMs
    on CUDA (bf16 is refused: the distances need fp32). On a CPU the default is every core as threads of one
    process (`--threads 0`; the rows of each query block are split over the threads), measured faster than
    `--workers` processes on this project's benchmark machine (benchmarks/results/optimal_loss.md); `--workers N`
    splits the cores among N processes. With labels
    (`--labels FILE` or `--conditional`) the posterior runs within each class: the conditional optimal loss,
    overall and per class. Results are cached by data fingerprint and settings under $DIFFLOSS_CACHE
    (default ~/.cache/diffloss).

    Example: diffloss optimal-loss --data mnist --levels 32 --json out/mnist.json --plot out/mnist.png
    """
    proc, tgt = process_from_spec(process), get_target(target)
    if estimator not in ESTIMATORS:
        raise DifflossError(f"unknown estimator {estimator!r}; choose one of: {', '.join(ESTIMATORS)}")
    if workers < 1 or threads < 0:
        raise DifflossError(f"--workers must be >= 1 and --threads >= 0 (0 = every core), got {workers} and {threads}")
    check_estimator_precision(precision, resolve_device(device, world_from_env()))  # fail before loading data
    s = nsr_levels(
        proc,
        sigmas=parse_floats(sigmas, "--sigmas", positive=True) if sigmas is not None else None,
        times=parse_floats(times, "--t") if times is not None else None,
        logsnr=parse_floats(logsnr, "--logsnr") if logsnr is not None else None,
        count=levels,
    )
    ds = load_dataset(data)
    if labels_file is not None:
        ds = ds.with_labels(load_labels_file(labels_file))
    settings = dict(
        estimator=estimator,
        conditional=conditional or labels_file is not None,
        queries=queries,
        rel_stderr=rel_stderr,
        max_queries=max_queries,
        seed=seed,
        all_rows=all_rows,
        subset_size=subset_size,
        correction=parse_correction(correction),
        max_memory=parse_bytes(max_memory) if max_memory else None,
        workers=workers,
        threads=threads,
        device=device,
        precision=precision,
        cache=not no_cache,
    )
    objective = None  # built before any J* is computed, so a bad --weighting/--density fails at once
    if weighting is not None or density is not None:
        objective = build_objective(tgt.name, weighting, density or "default", proc, ds)
    result = optimal_loss(ds, s, progress=not quiet, **settings)
    floor = None
    if objective is not None:
        floor = objective_floor(objective, proc, data_jstar(ds, progress=not quiet, **settings)).to_dict()
    if not is_main_process():
        return
    doc = result.to_json(proc, tgt, floor)
    if json_out:
        write_json_atomic(json_out, doc)
    if csv_out:
        write_text_atomic(csv_out, csv_text(doc))
    if plot_out:
        from diffloss.optimal.plot import plot_optimal_loss

        plot_optimal_loss(result, proc, tgt, doc["data"]["variance_per_dim"], plot_out)
    if not quiet:
        click.echo(table_text(doc))
