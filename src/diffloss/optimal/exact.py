"""The exact optimal-loss estimator: the full posterior over all N rows, Monte Carlo only over (x0, eps).

    J*(s) = E ||x0 - m(x0 + s eps)||^2 / D        (per-dimension mean; m the posterior mean over rows)

Estimator. For any c(x) the term <c, x0 - m> has conditional mean 0 given x, so E<x0 - c, x0 - m> = J* * D
for every c. c = m is the direct form (it needs the extra product P . Y per level); c = 0 needs only inner
products with the rows but is very noisy at small s. We choose c per (level, query) as a function of x only,
on data centered at its mean (x = x0 + s eps):

- c = the mode row y_k where the posterior mode holds at least a mass tau. If the mode is the source row (or
  a duplicate), f = 0 exactly; otherwise f = <x0 - y_k, x0 - m>, from a second pass over the rows for those
  few pairs (``posterior.mode_sums``). This handles the rare-event regime of small s, where the posterior
  almost always sits on the source and forms linear in the weights are noisy;
- elsewhere c = kappa * x: f = A - kappa * B with A = <x0, x0 - m> and the zero-mean control
  B = <x, x0 - m>, both read off the streamed posterior sums.

tau (from ``MODE_MASS``; inf = never) and kappa (the regression coefficient of A on B) are chosen per level to
minimize the variance of f, and *cross-fitted* (queries split by parity, each half uses the other half's
choice), so the estimate stays unbiased.

The standard error is the sample std of f / sqrt(Q).

Queries: source rows drawn with replacement (or, with ``all_rows``, every row exactly once, in which case
the reported stderr is the with-replacement formula, an upper bound), eps ~ N(0, I) in fp32, generated
in fixed blocks from ``numpy.random.default_rng([seed, ..., block])`` so the numbers do not depend on
chunking or on how rows are sharded. The same (x0, eps) serve every level.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from diffloss.errors import DifflossError
from diffloss.optimal.inputs import as_levels, as_rows, check_options, class_groups, combine_groups
from diffloss.optimal.posterior import MODE_MIN_MASS, ModePairs, PosteriorSums, Rows, mode_sums, posterior_sums
from diffloss.optimal.result import OptimalLossResult

REL_STDERR = 0.02  # default target of the automatic query count: stderr <= this x max(J*, floor) per level
MAX_QUERIES = 20_000  # default cap on the automatic query count
QUERY_BLOCK = 256  # queries per block (the unit of query generation and of the auto-Q rounds)
PILOT_QUERIES = 1024  # queries before the first automatic choice of Q
FLOOR_FRACTION = 1e-2  # rel_stderr is relative to max(J*, FLOOR_FRACTION * per-dim data variance)
BYTES_PER_ENTRY = 48  # working memory per (query, row) entry of a chunk on the torch (CUDA) path: Gram, d, g, h,
# logits, weights, temps; the CPU kernel needs only the Gram (8 bytes per query and row)
CPU_BLOCKS_PER_CALL = 4  # query blocks per posterior pass on a CPU: per-pass costs (thread start and join, the
# mode-row selection) spread over 1024 queries; on CUDA a pass is one block, whose memory ``chunk_rows_for`` sizes
CPU_CHUNK_ROWS = 2048  # rows per chunk on a CPU: a query's terms over a chunk (4 x 8 KB) stay in the L1 cache
# candidate posterior masses of the mode above which the control is the mode row (inf: never), chosen per level
MODE_MASS = (MODE_MIN_MASS, 0.7, 0.9, 0.99, math.inf)


class RowPartition:
    """How the rows are split over processes: here, all rows in this one process."""

    def local(self, n: int) -> slice:
        """The rows (of a set of ``n``) that this process scans."""
        return slice(0, n)

    def combine(self, state: PosteriorSums) -> PosteriorSums:
        """The state over all rows, from this process's partial state."""
        return state

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over processes of a per-process partial sum."""
        return t


@dataclass
class QueryTerms:
    """Per-(level, query) terms, each (L, Q) float64 (sums over D): A = <x0, x0 - m>, B = <x, x0 - m>, the
    posterior ``mass`` of the mode row y_k, and ``fixed`` = <x0 - y_k, x0 - m> where that mass is at least
    ``MODE_MASS[0]`` (NaN elsewhere)."""

    a: np.ndarray
    b: np.ndarray
    mass: np.ndarray
    fixed: np.ndarray

    @property
    def n(self) -> int:
        return self.a.shape[1]

    @staticmethod
    def concat(parts: Sequence[QueryTerms]) -> QueryTerms:
        keys = ("a", "b", "mass", "fixed")
        return QueryTerms(*(np.concatenate([getattr(p, k) for p in parts], 1) for k in keys))


def _controlled(terms: QueryTerms, tau: float, kappa: np.ndarray) -> np.ndarray:
    """f per (level, query): the mode-row form where the mode holds >= tau (per level), else a - kappa * b."""
    use_mode = (terms.mass >= tau[:, None]) & ~np.isnan(terms.fixed)
    return np.where(use_mode, terms.fixed, terms.a - kappa[:, None] * terms.b)


def _fit(terms: QueryTerms, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per level, the (tau, kappa) with the smallest variance of f over the queries ``cols``."""
    a, b = terms.a[:, cols], terms.b[:, cols]
    sub = QueryTerms(a, b, terms.mass[:, cols], terms.fixed[:, cols])
    best_var = np.full(a.shape[0], np.inf)
    best_tau, best_kappa = np.zeros(a.shape[0]), np.zeros(a.shape[0])
    for t in MODE_MASS:
        tau = np.full(a.shape[0], t)
        free = ~((sub.mass >= t) & ~np.isnan(sub.fixed))
        cnt = np.maximum(free.sum(1), 1)
        bc = np.where(free, b - (np.where(free, b, 0).sum(1) / cnt)[:, None], 0)
        ac = np.where(free, a - (np.where(free, a, 0).sum(1) / cnt)[:, None], 0)
        var_b = (bc**2).sum(1)
        kappa = np.where(var_b > 0, (ac * bc).sum(1) / np.where(var_b > 0, var_b, 1.0), 0.0)
        var = _controlled(sub, tau, kappa).var(1) if a.shape[1] > 1 else np.zeros(a.shape[0])
        better = var < best_var
        best_var = np.where(better, var, best_var)
        best_tau, best_kappa = np.where(better, t, best_tau), np.where(better, kappa, best_kappa)
    return best_tau, best_kappa


def cross_fitted_values(terms: QueryTerms) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-query values f, (L, Q), and the fitted controls {"tau": (2, L), "kappa": (2, L)}.

    The control is chosen per level and *cross-fitted*: queries are split by parity and each half uses the
    (mode threshold tau, kappa) that minimizes the variance of f on the other half, so f stays unbiased."""
    folds = [np.arange(terms.n) % 2 == k for k in (0, 1)]
    values = np.empty_like(terms.a)
    taus, kappas = np.zeros((2, terms.a.shape[0])), np.zeros((2, terms.a.shape[0]))
    for k, fold in enumerate(folds):
        taus[k], kappas[k] = _fit(terms, ~fold)
        sub = QueryTerms(terms.a[:, fold], terms.b[:, fold], terms.mass[:, fold], terms.fixed[:, fold])
        values[:, fold] = _controlled(sub, taus[k], kappas[k])
    return values, {"tau": taus, "kappa": kappas}


def mean_and_stderr(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise mean and standard error of the mean of (L, Q) values."""
    q = values.shape[1]
    return values.mean(1), values.std(1, ddof=1) / math.sqrt(q)


def query_block(
    n: int, dim: int, key: Sequence[int], block: int, size: int, order: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Source-row indices and fp32 noise of query block ``block`` (``size`` queries).

    ``order`` (a permutation of the rows) selects rows without replacement; otherwise they are drawn
    uniformly with replacement."""
    rng = np.random.default_rng([*key, block])
    if order is not None:
        idx = order[block * QUERY_BLOCK : block * QUERY_BLOCK + size]
    else:
        idx = rng.integers(0, n, size)
    return idx, rng.standard_normal((size, dim), dtype=np.float32)


def query_terms(
    rows: Rows,
    local: Rows,
    sigmas: np.ndarray,
    idx: np.ndarray,
    eps: np.ndarray,
    *,
    chunk_rows: int,
    partition: RowPartition,
    threads: int = 1,
) -> QueryTerms:
    """The terms of queries x0 = rows[idx] with noise ``eps`` (host arrays); ``rows`` are the centered data,
    ``local`` the part of them this process scans (all of them unless sharded), both on the device that computes,
    ``threads`` the row-shard threads of ``posterior_sums``.
    """
    device = rows.x.device
    x0, e = rows.take(torch.from_numpy(idx).to(device)), torch.from_numpy(eps).to(device)
    offset = partition.local(len(rows)).start
    state = partition.combine(
        posterior_sums(x0, e, local, sigmas, chunk_rows=chunk_rows, row_offset=offset, threads=threads)
    )
    h, g = state.inner_terms()
    sig = torch.from_numpy(sigmas).to(device)[:, None]
    a, b = h, h + sig * g
    mass = state.mode_weight()
    use_mode = mass >= MODE_MASS[0]
    # the source row (logit exactly 0) is a mode: c = x0
    fixed = torch.where(use_mode & (state.best <= 0), 0.0, torch.full_like(a, math.nan))
    # the mode row is known where its mass reaches MODE_MIN_MASS (elsewhere, at the threshold's rounding edge,
    # the control stays kappa * x)
    lv, qi = torch.nonzero(use_mode & (state.best > 0) & (state.best_row >= 0), as_tuple=True)
    if len(lv):
        ids, pair_mode = torch.unique(state.best_row[lv, qi].long(), return_inverse=True)
        modes = rows.take(ids)
        pairs = ModePairs(qi, pair_mode, sig[lv, 0], state.shift[lv, qi])
        ez = mode_sums(x0, e, modes, pairs, local, chunk_rows=chunk_rows, threads=threads)
        mode_m = partition.sum(ez) / state.z[lv, qi]  # <y_k, m>
        mode_x0 = (modes[pair_mode].double() * x0[qi].double()).sum(1)
        fixed[lv, qi] = a[lv, qi] - (mode_x0 - mode_m)  # <x0, x0 - m> - <y_k, x0 - m>
    return QueryTerms(*(t.cpu().numpy() for t in (a, b, mass, fixed)))


def _needed_queries(values: np.ndarray, floor: float, rel_stderr: float, dim: int) -> int:
    mean, se = mean_and_stderr(values)
    target = rel_stderr * np.maximum(mean / dim, floor)
    ratio = np.divide(se / dim, target, out=np.zeros_like(se), where=se > 0)  # se = 0: no more queries needed
    return int(np.ceil(values.shape[1] * np.max(ratio**2)))


def _curve_terms(
    rows: Rows,
    sigmas: np.ndarray,
    key: Sequence[int],
    *,
    queries: int | None,
    rel_stderr: float,
    max_queries: int,
    all_rows: bool,
    chunk_rows: int,
    partition: RowPartition,
    threads: int,
    bar: tqdm,
) -> QueryTerms:
    """Stream query blocks until the requested (or automatically chosen) number of queries is done."""
    n, dim = rows.x.shape
    order = np.random.default_rng([*key, 2**32 - 1]).permutation(n) if all_rows else None
    total = n if all_rows else (queries if queries is not None else min(PILOT_QUERIES, max_queries))
    floor = FLOOR_FRACTION * rows.variance() if n > 1 else 0.0
    part = partition.local(n)
    local = rows.view(part.start, part.stop)
    parts: list[QueryTerms] = []
    done, block = 0, 0
    bar.total += total
    per_call = QUERY_BLOCK * (1 if rows.x.is_cuda else CPU_BLOCKS_PER_CALL)
    while True:
        while done < total:
            drawn = []
            for _ in range(min(per_call, total - done) // QUERY_BLOCK or 1):  # whole blocks, or the last part
                drawn.append(query_block(n, dim, key, block, min(QUERY_BLOCK, total - done), order))
                done, block = done + len(drawn[-1][0]), block + 1
            idx, eps = (np.concatenate(t) for t in zip(*drawn))
            parts.append(
                query_terms(rows, local, sigmas, idx, eps, chunk_rows=chunk_rows, partition=partition, threads=threads)
            )
            bar.update(len(idx))
        terms = QueryTerms.concat(parts)
        if all_rows or queries is not None or total >= max_queries:
            return terms
        values, _ = cross_fitted_values(terms)
        needed = min(max_queries, _needed_queries(values, floor, rel_stderr, dim))
        if needed <= total:
            return terms
        grow = min(needed, 4 * total)  # re-check after at most quadrupling
        bar.total += grow - total
        total = grow


def rare_event_bound(rows: Rows, terms: QueryTerms, values: np.ndarray) -> np.ndarray:
    """Per level, an approximate 97.5% upper bound on J* where every query's value is exactly 0 (NaN elsewhere).

    A value is exactly 0 when the query's posterior mode is its source row x0 and the control is that row; the
    estimate is then 0 +- 0 although J* > 0 (the rare-event regime of small s). With m the posterior mean,
    ||x0 - m|| <= (1 - w) * diam where w is the source's posterior weight and diam <= 2 R (R the largest distance
    of a row from the mean; ``rows`` are centered). Queries whose mode is not the source (probability p, none
    seen in Q) contribute at most diam^2, and p < ln(40) / Q with 97.5% confidence (the "rule of three"), so
    J* <= 4 R^2 / D * (mean over queries of (1 - w)^2 + ln(40) / Q). Loose (it charges every unseen event the
    whole diameter) but honest; ``monotone_bound`` tightens it. Where all rows are equal J* = 0 exactly and no
    bound is reported."""
    q, dim = values.shape[1], rows.x.shape[1]
    radius_sq = rows.max_sq()
    off_source = np.mean((1.0 - np.minimum(terms.mass, 1.0)) ** 2, axis=1)
    bound = 4.0 * radius_sq / dim * (off_source + math.log(40.0) / q)
    return np.where((values == 0).all(1) & (radius_sq > 0), bound, math.nan)


def monotone_bound(sigmas: np.ndarray, x0_mse: np.ndarray, stderr: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """``bound`` (NaN where not in the rare-event regime) tightened by the monotonicity of J* in s.

    J*(s) is non-decreasing in s: x at a larger s' is x at s plus independent noise of variance s'^2 - s^2, a
    noisier observation of x0, so its posterior variance is larger on average. A rare-event level is therefore
    bounded by the nearest larger level with a non-zero estimate, J* + 1.96 stderr (97.5%, normal approximation).
    The smaller of that and the rule-of-three bound (each at 97.5%) holds with 95% confidence (Bonferroni)."""
    out = bound.copy()
    seen = (x0_mse > 0) & np.isfinite(stderr)
    for k in np.flatnonzero(np.isfinite(bound)):
        above = np.flatnonzero(seen & (sigmas > sigmas[k]))
        if len(above):
            j = above[np.argmin(sigmas[above])]
            out[k] = min(bound[k], x0_mse[j] + 1.96 * stderr[j])
    return out


def chunk_rows_for(
    max_memory: int | None, chunk_rows: int | None = None, dim: int = 0, device: torch.device | None = None
) -> int:
    """Rows per chunk: ``chunk_rows`` if given, else as many as fit in ``max_memory`` bytes (a chunk of D-dim rows
    takes QUERY_BLOCK x BYTES_PER_ENTRY + 4 D bytes per row), at most ``CPU_CHUNK_ROWS`` on a CPU (cache-sized:
    the kernel's per-level passes then run from the L1 cache). On CUDA ``max_memory`` bounds device memory and
    defaults to a quarter of what is free."""
    if chunk_rows is not None:
        if chunk_rows < 1:
            raise DifflossError(f"chunk_rows must be >= 1, got {chunk_rows}")
        return chunk_rows
    cuda = device is not None and device.type == "cuda"
    if max_memory is None:
        if not cuda:
            return CPU_CHUNK_ROWS
        max_memory = torch.cuda.mem_get_info(device)[0] // 4
    per_row = QUERY_BLOCK * BYTES_PER_ENTRY + 4 * dim
    rows = max_memory // per_row
    if rows < 16:
        raise DifflossError(f"max_memory {max_memory} bytes is too small; give at least {16 * per_row}")
    return int(rows if cuda else min(rows, CPU_CHUNK_ROWS))


def centered_rows(x: np.ndarray) -> torch.Tensor:
    """fp32 rows minus their float64 mean (J* is translation invariant; centering limits cancellation)."""
    x64 = np.asarray(x, dtype=np.float64)
    return torch.from_numpy(np.ascontiguousarray(x64 - x64.mean(0), dtype=np.float32))


def data_rows(x: np.ndarray | torch.Tensor, device: torch.device, chunk_rows: int = 65536) -> Rows:
    """The centered ``Rows`` of ``x`` on ``device``. Host data are centered in float64 (``centered_rows``) and
    copied over in fp32; a tensor already on a GPU stays as it is stored (e.g. bf16: the data are then exactly
    its bf16 values), centered chunk by chunk by its float64 mean."""
    if isinstance(x, np.ndarray):
        return Rows.of(centered_rows(x).to(device))
    x = x.to(device)
    total = sum(x[lo : lo + chunk_rows].double().sum(0) for lo in range(0, len(x), chunk_rows))
    return Rows.of(x, (total / len(x)).float(), chunk_rows)


@contextlib.contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """torch ops on one intra-op thread for the body (parallelism comes from ``posterior.on_row_shards``)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def exact_optimal_loss(
    x: np.ndarray | torch.Tensor,
    sigmas: Sequence[float] | np.ndarray,
    *,
    queries: int | None = None,
    rel_stderr: float = REL_STDERR,
    max_queries: int = MAX_QUERIES,
    seed: int = 0,
    labels: np.ndarray | None = None,
    all_rows: bool = False,
    chunk_rows: int | None = None,
    max_memory: int | None = None,
    progress: bool = False,
    partition: RowPartition | None = None,
    device: torch.device | str | None = None,
    threads: int | None = None,
) -> OptimalLossResult:
    """J*(s) per dimension at each noise-to-signal ratio in ``sigmas`` for the data ``x`` (N, D).

    ``queries``: number of (x0, eps) draws; by default chosen automatically (at least 1024, at most
    ``max_queries``) so that every level's stderr is at most ``rel_stderr`` times max(J*, 1% of the
    per-dimension data variance). ``all_rows``: every row is a source row exactly once (Q = N).
    ``labels`` (N,) gives the *conditional* optimal loss: the posterior runs within each class; the result
    holds J* overall (classes weighted by frequency) and ``per_class`` curves. ``chunk_rows`` /
    ``max_memory`` (bytes) bound the working memory of a chunk (device memory on CUDA). ``partition`` splits
    rows across processes (see ``diffloss.optimal.sharded``). ``device``: where the rows live and the work runs
    (default: where ``x`` is; a tensor on a GPU, e.g. in bf16, is computed on where it is stored, see
    ``data_rows``). The queries are drawn on the host, so the numbers do not depend on the device beyond fp32
    rounding. ``threads`` (default: torch's intra-op thread count): on a CPU the rows of each query block are
    split over that many threads (``posterior.on_row_shards``), each running torch ops on one intra-op thread;
    the thread count changes the numbers only by fp32 rounding (the merge order of partial sums).
    """
    x, sig = as_rows(x), as_levels(sigmas)
    check_options(queries, rel_stderr)
    if device is None:
        device = x.device if isinstance(x, torch.Tensor) else "cpu"
    device = torch.device(device)
    chunk = chunk_rows_for(max_memory, chunk_rows, x.shape[1], device)
    partition = partition or RowPartition()
    n, dim = x.shape
    groups = class_groups(n, labels)
    bar = tqdm(total=0, unit="query", desc="optimal loss", disable=not progress, leave=False)
    threads = torch.get_num_threads() if threads is None else threads
    curves, errors, bounds, controls, n_queries = {}, {}, {}, {}, 0
    for c, rows_idx in groups.items():
        share = len(rows_idx) / n
        rows = data_rows(x if len(rows_idx) == n else x[rows_idx], device)  # with every intra-op thread
        with one_intra_op_thread():
            terms = _curve_terms(
                rows,
                sig,
                [seed] if c is None else [seed, c],
                queries=None if queries is None else max(2, round(queries * share)),
                rel_stderr=rel_stderr * math.sqrt(len(groups)),  # per class, so that the overall curve meets it
                max_queries=max(2, round(max_queries * share)),
                all_rows=all_rows,
                chunk_rows=chunk,
                partition=partition,
                threads=threads,
                bar=bar,
            )
        values, fitted = cross_fitted_values(terms)
        mean, se = mean_and_stderr(values)
        curves[c], errors[c], controls[c] = mean / dim, se / dim, fitted
        bounds[c] = rare_event_bound(rows, terms, values)
        n_queries += terms.n
    bar.close()
    x0_mse, stderr = combine_groups(groups, curves, errors)
    upper95, _ = combine_groups(groups, bounds, bounds)  # NaN unless every class is in the rare-event regime
    upper95 = monotone_bound(sig, x0_mse, stderr, upper95)
    meta = {
        "seed": seed,
        "all_rows": all_rows,
        "rel_stderr": rel_stderr if queries is None and not all_rows else None,
        "control": "mode row where it holds >= tau of the posterior, else kappa * x; (tau, kappa) cross-fitted",
        "control_fit": {  # per class ("all" = all data), per fold and level; tau null = kappa * x everywhere
            "all" if c is None else str(c): {k: np.where(np.isfinite(v), v, None).tolist() for k, v in f.items()}
            for c, f in controls.items()
        },
        "conditional": labels is not None,
    }
    return OptimalLossResult(
        sigmas=sig,
        x0_mse=x0_mse,
        stderr=stderr,
        n_data=n,
        dim=dim,
        estimator="exact",
        n_queries=n_queries,
        upper95=upper95 if np.isfinite(upper95).any() else None,
        per_class=curves if labels is not None else None,
        per_class_stderr=errors if labels is not None else None,
        meta=meta,
    )
