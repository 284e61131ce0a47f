"""``optimal_loss``: the one entry point to every optimal-loss estimator, with the results cache.

It picks the estimator (exact in this process, exact sharded over ``--workers`` local processes or over the
ranks of a torchrun job, or stochastic), holds the one set of default settings, and reads and writes the
results cache (``diffloss.optimal.cache``) under one key policy: the data fingerprint plus every setting that
changes the numbers. Settings that do not (workers, threads, chunking, memory bound, device, process, target)
are not part of the key (the device changes only fp32 rounding, as chunking does); ``--precision tf32`` does
change them (GEMM inputs rounded to 10 mantissa bits) and is part of it. The curve is stored in x0 units and
converted to a target on the way out.

Precision: the estimator's Gram products are fp32 GEMMs (``fp32``, the default), or TF32 tensor-core GEMMs on
CUDA (``tf32``): the near-duplicate entries stay exact in float64, the far ones get distance errors of ~1e-3
of ||x||^2, which matter only where such rows carry weight; J* then agrees with fp32 within its Monte Carlo
error at the levels where the posterior is spread (checked by the CUDA tests). ``bf16`` is refused: its
8-bit mantissa puts errors of ~1% of ||x||^2 into every distance, amplified by 1 / (2 s^2) in the weights.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from diffloss.data import Dataset
from diffloss.device import check_precision, resolve_device, set_matmul_precision, set_threads, world_from_env
from diffloss.errors import DifflossError, unknown_name
from diffloss.optimal.cache import cache_key, load_cached, store_cached
from diffloss.optimal.exact import MAX_QUERIES, REL_STDERR
from diffloss.optimal.inputs import as_levels, as_rows, check_options
from diffloss.optimal.result import OptimalLossResult

ESTIMATORS = ("exact", "stochastic")
DEFAULT_SUBSET = 1000  # stochastic: default subset size L = min(N, this)


def _dataset(data: Dataset | np.ndarray | torch.Tensor, labels: np.ndarray | None) -> Dataset:
    """``data`` as a Dataset (arrays get the name "array" and a content fingerprint), labels attached."""
    if isinstance(data, Dataset):
        ds = data
    else:
        x = as_rows(data)
        ds = Dataset(np.ascontiguousarray(x, dtype=np.float32), (x.shape[1],), "array")
    return ds if labels is None else ds.with_labels(np.asarray(labels))


def optimal_loss(
    data: Dataset | np.ndarray | torch.Tensor,
    sigmas: Sequence[float] | np.ndarray,
    *,
    estimator: str = "exact",
    conditional: bool = False,
    labels: np.ndarray | None = None,
    queries: int | None = None,
    rel_stderr: float = REL_STDERR,
    max_queries: int = MAX_QUERIES,
    seed: int = 0,
    all_rows: bool = False,
    subset_size: int | None = None,
    correction: float | None = None,
    max_memory: int | None = None,
    workers: int = 1,
    threads: int = 0,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    cache: bool = True,
    progress: bool = False,
) -> OptimalLossResult:
    """J*(s) per dimension of ``data`` at the noise-to-signal ratios ``sigmas`` (any s > 0).

    ``data``: a ``Dataset`` or an (N, D) array. ``conditional``: the class-conditional optimal loss with the
    data's own labels, or with ``labels`` (N,) when given. Exact estimator (default): the full posterior over
    all N rows, Monte Carlo over (x0, eps) with ``queries`` draws (default: chosen so every level's stderr is at
    most ``rel_stderr`` x max(J*, 1% of the data variance), at most ``max_queries``; ``all_rows``: every row
    once), computed with ``threads`` intra-op threads (0: every core), or split over ``workers`` local CPU
    processes, or over the ranks of a torchrun job (``WORLD_SIZE`` > 1: joined here; every rank returns the
    same result). Stochastic estimator: subsets of ``subset_size`` rows (default min(N, 1000)) with coefficient
    ``correction`` (default 4N/L; ``math.inf`` = SNIS); it needs ``queries``. ``device``: auto (CUDA when
    present), cpu, cuda or cuda:N (under torchrun, cuda is the rank's own GPU); ``precision``: fp32 or tf32
    (CUDA; see the module docstring). ``max_memory`` (bytes) bounds a chunk's working memory (exact; device
    memory on CUDA). With ``cache``
    the result is read from / written to the results cache (``$DIFFLOSS_CACHE``). ``result.data`` describes
    ``data`` (name, fingerprint, per-dimension variance).
    """
    from diffloss.optimal.sharded import init_from_env, is_main_process

    if estimator not in ESTIMATORS:
        raise unknown_name("estimator", estimator, ESTIMATORS)
    check_options(queries, rel_stderr)
    if max_queries < 2:
        raise DifflossError(f"max_queries must be >= 2, got {max_queries}")
    if workers < 1 or threads < 0:
        raise DifflossError(f"workers must be >= 1 and threads >= 0 (0 = every core), got {workers} and {threads}")
    dev = resolve_device(str(device), world_from_env())
    check_estimator_precision(precision, dev)
    ds = _dataset(data, labels)
    if conditional and ds.labels is None:
        raise DifflossError(f"conditional optimal loss: {ds.name} has no labels; give them (--labels FILE)")
    s = as_levels(sigmas)
    settings: dict[str, Any] = {
        "estimator": estimator,
        "queries": queries,
        "seed": seed,
        "rel_stderr": rel_stderr,
        "max_queries": max_queries,
        "all_rows": all_rows,
        "conditional": conditional,
        "sigmas": s.tolist(),
    }
    if precision != "fp32":
        settings["precision"] = precision
    if estimator == "stochastic":  # the exact estimator's query rules do not apply: keep them out of the key
        for key in ("rel_stderr", "max_queries", "all_rows"):
            del settings[key]
        settings["subset_size"] = subset_size if subset_size is not None else min(ds.n, DEFAULT_SUBSET)
        if not 1 <= settings["subset_size"] <= ds.n:
            raise DifflossError(f"subset size must be in [1, N = {ds.n}], got {settings['subset_size']}")
        if correction is not None and not correction > 0:
            raise DifflossError(f"the correction C must be > 0 (1 = DOL, inf = SNIS), got {correction}")
        settings["correction"] = None if correction is None else (correction if math.isfinite(correction) else "inf")
    distributed = estimator == "exact" and init_from_env(dev)  # under torchrun every rank scans its share of rows
    key = cache_key(ds.fingerprint, settings)
    result = load_cached(key) if cache and not distributed else None  # ranks must agree on whether to compute
    if result is None:
        in_process = workers == 1 or distributed or estimator == "stochastic"
        with _compute_settings(precision, threads if in_process else None):
            result = _compute(ds, s, settings, max_memory, workers, threads, dev, progress and is_main_process())
        if cache and is_main_process():  # rank 0 may still store it for later single-process runs
            store_cached(key, result)
    result.data = {"name": ds.name, "fingerprint": ds.fingerprint, "variance_per_dim": float(ds.variance.mean())}
    return result


@contextlib.contextmanager
def _compute_settings(precision: str, threads: int | None) -> Iterator[None]:
    """TF32 matmuls for ``precision`` tf32 and ``threads`` intra-op threads (0: every core; None: unchanged, as
    for spawned workers, which set their own), for the body only."""
    previous = torch.get_num_threads()
    set_matmul_precision(precision)
    if threads is not None:
        set_threads(threads)
    try:
        yield
    finally:
        set_matmul_precision("fp32")
        torch.set_num_threads(previous)


def check_estimator_precision(precision: str, device: torch.device) -> None:
    """Refuse, in one line, a ``--precision`` the estimator does not run (bf16) or the device cannot (tf32 on a
    CPU)."""
    check_precision(precision, device)
    if precision == "bf16":
        raise DifflossError(
            "--precision bf16: the optimal-loss estimator needs fp32 Gram products (bf16's 8-bit mantissa puts "
            "~1% errors into distances that 1/(2 s^2) amplifies); use fp32, or tf32 on CUDA"
        )


def _compute(
    ds: Dataset, s: np.ndarray, settings: dict[str, Any], max_memory: int | None, workers: int, threads: int,
    device: torch.device, progress: bool,
) -> OptimalLossResult:  # fmt: skip
    labels = ds.labels if settings["conditional"] else None
    if settings["estimator"] == "stochastic":
        from diffloss.optimal.stochastic import stochastic_optimal_loss

        c = settings["correction"]
        return stochastic_optimal_loss(
            ds.x,
            s,
            subset_size=settings["subset_size"],
            correction=math.inf if c == "inf" else c,
            queries=settings["queries"],
            seed=settings["seed"],
            labels=labels,
            progress=progress,
            device=device,
        )
    from diffloss.optimal.exact import exact_optimal_loss
    from diffloss.optimal.sharded import DistributedRows, spawn_optimal_loss

    kwargs = dict(
        queries=settings["queries"],
        rel_stderr=settings["rel_stderr"],
        max_queries=settings["max_queries"],
        seed=settings["seed"],
        labels=labels,
        all_rows=settings["all_rows"],
        max_memory=max_memory,
        progress=progress,
        device=device,
    )
    if torch.distributed.is_initialized():
        return exact_optimal_loss(ds.x, s, partition=DistributedRows(), **kwargs)
    return spawn_optimal_loss(ds.x, s, workers=workers, threads=threads, **kwargs)
