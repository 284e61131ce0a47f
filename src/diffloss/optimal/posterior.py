"""Posterior sums over data rows for many queries and noise levels at once, streamed in chunks.

A query is a source row x0 = y_j and a noise draw eps; at noise-to-signal ratio s it sees x = x0 + s * eps.
The posterior over rows is w_i ∝ exp(delta_i) with the logit taken *relative to the source row*

    delta_i(s) = (||x - x0||^2 - ||x - y_i||^2) / (2 s^2) = -d_i / (2 s^2) - g_i / s,
    d_i = ||x0 - y_i||^2,   g_i = <eps, x0 - y_i>,

so the source row (and every exact duplicate of it) has delta = 0, g = 0 and h = 0 exactly, where
h_i = <x0, x0 - y_i>. For each (level, query) we keep a running, shifted log-sum-exp state

    shift,  z = sum_i exp(delta_i - shift),  zh = sum_i exp(delta_i - shift) h_i,  zg = ... g_i,

from which <x0, x0 - m> = zh / z and <eps, x0 - m> = zg / z follow (m the posterior mean). States over
disjoint row sets merge exactly (``PosteriorSums.merge``), which is what sharding relies on.

Numerics: the Gram products [x0; eps] . Y^T are fp32 GEMMs (torch) computed once per chunk and shared by every
level. Entries whose fp32 distance is within ``NEAR_TOL`` (relative) of 0 — the source row, duplicates and
near-duplicates, where fp32 cancellation would matter at small s — are recomputed exactly in float64.
Weights below exp(-87) of a chunk's largest (fp32's smallest normal) are 0 (the kernel) or may be subnormal
(``torch.softmax``); the source row's own weight is
exp(0 - shift) exactly as any other row's, and a posterior collapsed onto it gives <x0, x0 - m> = 0 up to such
weights (the mode-row control then gives 0 exactly). The state also tracks the posterior mode (largest logit
and its row), and ``mode_sums`` is a second pass over the rows for (level, query) pairs whose mode row is the
control.

Two code paths compute the same state (over all rows; a shard without the source row may skip chunks on the
first that the second sums, see ``kernel``):
- on a CPU, ``kernel.chunk_update`` (numba) takes a chunk's Gram products and does everything else per query
  in one pass while the query's row of the chunk is in the L1 cache: terms, near entries, every level's logits,
  weights and sums, merged into the running state; a level whose chunk lies entirely below the exp range of
  the running shift only has its largest logit recorded;
- on CUDA (or ``sync_free`` anywhere; and on a CPU without numba, see ``cpu_kernel``), torch ops that never
  wait for the GPU inside the chunk loop: per level a chunk's weights are ``torch.softmax`` of its logits (state:
  shift = the chunk's log-sum-exp, z = 1), the near entries are found with a fixed capacity
  (``NEAR_PER_QUERY``; an overflow is noticed once per call and the call redone with exact counting), and the
  mode row is an argmax over the chunk.

Rows (``Rows``) are fp32 centered rows, or any float storage (bf16 on a GPU) with an fp32 offset subtracted
chunk by chunk (``Rows.block``): a data set in bf16 is then exactly its bf16 values, computed on in fp32.
"""

from __future__ import annotations

import functools
import importlib
import math
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")
NEAR_TOL = 1e-3  # relative distance below which an entry is recomputed exactly in float64
EXP_MIN = -87.0  # shifted logits below this count as weight 0 (exp(-87) ~ 1.6e-38, fp32's smallest normal)
_EXP_MIN_VALUE = float(torch.exp(torch.tensor(EXP_MIN)))
MODE_MIN_MASS = 0.5  # the mode row is located where the mode holds at least this posterior mass
NEAR_PER_QUERY = 16  # CUDA: near entries per query and chunk found without a host sync (more: the call is redone)
CPU_MODE_PAIRS = 1024  # mode pairs per pass on a CPU: the pass's GEMM has at most 3 rows per pair (25 MB a chunk)
S_MIN_FP32 = 1e-15  # levels below this compute their fp32 logits at it (see ``logit_coefficients``)
LOGIT_MIN = -1e30  # logits are floored here (finite; the kernel's ``LOGIT_MIN``)


def logit_coefficients(sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fp32 (a, b), each (L,), with delta = a d + b g: a = -1 / (2 s^2), b = -1 / s, at max(s, ``S_MIN_FP32``).

    1 / s^2 overflows fp32 below s ~ 4e-20 (and -inf * 0 is NaN at the source row). Flooring s changes nothing
    where it matters: at 1e-15 a row at squared distance d >= 1e-26 from x0 (distinct fp32 rows whose differing
    coordinates are >= 1e-6 in size) already has a logit below -5000, so its weight is 0 at both levels."""
    s = np.maximum(np.asarray(sigmas, dtype=np.float64), S_MIN_FP32)
    return (-0.5 / s**2).astype(np.float32), (-1.0 / s).astype(np.float32)


@dataclass
class PosteriorSums:
    """Shifted log-sum-exp state per (level, query), float64 tensors of shape (L, Q).

    ``best`` is the largest logit seen and ``best_row`` its row (a global row index, as float64 so that the
    whole state travels as one tensor): the posterior mode, with weight exp(best - shift) / z. The row is
    located where that weight is at least ``MODE_MIN_MASS``; elsewhere it may be -1."""

    shift: torch.Tensor
    z: torch.Tensor
    zh: torch.Tensor
    zg: torch.Tensor
    best: torch.Tensor
    best_row: torch.Tensor

    @staticmethod
    def empty(n_levels: int, n_queries: int, device: torch.device | str = "cpu") -> PosteriorSums:
        zeros = torch.zeros(n_levels, n_queries, dtype=torch.float64, device=device)
        return PosteriorSums(zeros, zeros, zeros, zeros, torch.full_like(zeros, -math.inf), zeros - 1)

    def merge(self, other: PosteriorSums) -> PosteriorSums:
        """The state over the union of both row sets (exact up to rounding; ties keep ``self``'s mode)."""
        shift = torch.maximum(self.shift, other.shift)
        a, b = torch.exp(self.shift - shift), torch.exp(other.shift - shift)
        take = other.best > self.best
        return PosteriorSums(
            shift,
            a * self.z + b * other.z,
            a * self.zh + b * other.zh,
            a * self.zg + b * other.zg,
            torch.where(take, other.best, self.best),
            torch.where(take, other.best_row, self.best_row),
        )

    def renormalized(self) -> PosteriorSums:
        """The same state with the shift moved to the log-sum-exp (z = 1; z = 0 stays as is). The sums are divided
        by z, not scaled by exp(-log z), which overflows for a subnormal z (a chunk ~740 below the shift)."""
        pos = self.z > 0
        z = torch.where(pos, self.z, 1.0)
        return PosteriorSums(
            self.shift + torch.where(pos, torch.log(z), 0.0), self.z / z, self.zh / z, self.zg / z, self.best,
            self.best_row,
        )  # fmt: skip

    def stack(self) -> torch.Tensor:
        """(6, L, Q) tensor, for collective communication."""
        return torch.stack([self.shift, self.z, self.zh, self.zg, self.best, self.best_row])

    @staticmethod
    def unstack(t: torch.Tensor) -> PosteriorSums:
        return PosteriorSums(*t)

    def inner_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(<x0, x0 - m>, <eps, x0 - m>) per (level, query)."""
        return self.zh / self.z, self.zg / self.z

    def mode_weight(self) -> torch.Tensor:
        """Posterior weight of the mode row per (level, query)."""
        return torch.exp(self.best - self.shift) / self.z


@dataclass(frozen=True)
class Rows:
    """Data rows (n, D) with their squared norms (n,) fp32, computed once in float64 from the fp32 rows.

    ``x`` holds the centered fp32 rows, or (``offset`` given) any float storage, e.g. bf16 on a GPU, whose rows
    are ``x.float() - offset``; ``block`` and ``take`` return fp32 centered rows either way."""

    x: torch.Tensor
    sq: torch.Tensor
    offset: torch.Tensor | None = None

    @staticmethod
    def of(x: torch.Tensor, offset: torch.Tensor | None = None, chunk_rows: int = 65536) -> Rows:
        """``Rows`` of storage ``x`` (and ``offset``), the norms computed ``chunk_rows`` rows at a time."""
        ref = Rows(x, x.new_empty(0, dtype=torch.float32), offset)
        sq = [
            torch.linalg.vector_norm(ref._fp32(x[lo : lo + chunk_rows]), dim=1, dtype=torch.float64).square().float()
            for lo in range(0, len(x), chunk_rows)
        ]
        return Rows(x, torch.cat(sq) if sq else ref.sq, offset)

    def _fp32(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.offset is None else x.float() - self.offset

    def view(self, lo: int, hi: int) -> Rows:
        """Rows lo:hi, stored as these are (no copy)."""
        return Rows(self.x[lo:hi], self.sq[lo:hi], self.offset)

    def block(self, lo: int, hi: int) -> Rows:
        """Rows lo:hi as fp32 centered ``Rows`` (a copy only for offset storage)."""
        return Rows(self._fp32(self.x[lo:hi]), self.sq[lo:hi])

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """fp32 centered rows ``idx``."""
        return self._fp32(self.x[idx])

    def variance(self) -> float:
        """The per-dimension variance of the rows, averaged over dimensions: their mean squared norm over D, which
        assumes rows centered by their own mean (as ``exact.data_rows`` makes them)."""
        n, dim = self.x.shape
        return float(self.sq.double().sum()) / (n * dim)

    def max_sq(self) -> float:
        """An upper bound on the largest squared norm of a row: the largest fp32 norm (rounded to nearest from
        float64) raised by one fp32 rounding."""
        return float(self.sq.max()) * (1.0 + 2.0**-23)

    def __len__(self) -> int:
        return self.x.shape[0]


def near_pairs(
    d: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor, overflow: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) indices of the entries of a (q, n) matrix of squared distances ``d`` (from the expanded
    form ||a||^2 + ||b||^2 - 2 <a, b> in fp32) that must be recomputed exactly in float64: those within
    ``NEAR_TOL`` of the norms they cancel, d <= NEAR_TOL * (||a||^2 + ||b||^2) (duplicates and near-duplicates;
    fp32's relative error of the expanded form is then at most ~1e-4 of d). The one near-duplicate rule of every
    optimal-loss estimator; ``sq_a`` (q,), ``sq_b`` (n,) are the squared norms of the (centered) rows.

    With ``overflow`` (a bool tensor on ``d``'s device) the pairs are found without a host sync: at most
    ``NEAR_PER_QUERY`` per query row, padded with copies of the pair (0, 0) (recomputing it exactly is harmless);
    ``overflow`` is set where more were there, and the caller must then redo the work without it."""
    near = d <= NEAR_TOL * (sq_a[:, None] + sq_b[None, :]).to(d.dtype)
    if overflow is None:
        return torch.nonzero(near, as_tuple=True)
    capacity = NEAR_PER_QUERY * d.shape[0]
    overflow |= near.sum() > capacity
    idx = torch.nonzero_static(near, size=capacity, fill_value=0)
    return idx[:, 0], idx[:, 1]


def _exact_entries(
    x0: torch.Tensor, eps: torch.Tensor, rows: torch.Tensor, qi: torch.Tensor, ri: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 (d, g, h) for the (query, row) pairs (qi, ri)."""
    a = x0[qi].double()
    diff = a - rows[ri].double()
    return (diff * diff).sum(1), (eps[qi].double() * diff).sum(1), (a * diff).sum(1)


@dataclass(frozen=True)
class Queries:
    """Queries (x0, eps), both (q, D) fp32, with what every chunk needs of them: [x0; eps] stacked (one GEMM
    gives both Gram products), ||x0||^2 and <eps, x0> (float64 sums, stored fp32)."""

    x0: torch.Tensor
    eps: torch.Tensor
    both: torch.Tensor
    x0_sq: torch.Tensor
    eps_x0: torch.Tensor

    @staticmethod
    def of(x0: torch.Tensor, eps: torch.Tensor) -> Queries:
        x64 = x0.double()
        return Queries(x0, eps, torch.cat([x0, eps]), x64.pow(2).sum(1).float(), (eps.double() * x64).sum(1).float())


def _chunk_terms(
    qs: Queries, rows: Rows, overflow: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 (d, g, h), each (q, n), for the queries against fp32 ``rows``, with the near entries made exact
    (``overflow``: see ``near_pairs``)."""
    q = qs.x0.shape[0]
    gram = qs.both @ rows.x.T
    g0, ge = gram[:q], gram[q:]
    h = qs.x0_sq[:, None] - g0
    d = (h + rows.sq[None, :]).sub_(g0).clamp_(min=0.0)
    g = qs.eps_x0[:, None] - ge
    qi, ri = near = near_pairs(d, qs.x0_sq, rows.sq, overflow)
    de, gx, hx = _exact_entries(qs.x0, qs.eps, rows.x, qi, ri)
    d[near], g[near], h[near] = de.float(), gx.float(), hx.float()
    return d, g, h


def _level_sums(
    d: torch.Tensor, g: torch.Tensor, h: torch.Tensor, a: float, b: float, best_so_far: torch.Tensor
) -> torch.Tensor:  # fmt: skip
    """One level's chunk state (6, q) = (shift, z, zh, zg, best, best_row) with z = 1, in torch ops (the CUDA
    path; a CPU runs ``kernel.chunk_update``).

    The weights are p = softmax(logits): shift = log-sum-exp = best - log(max p) (p is 1 / sum at the largest
    logit), zh = sum p h, zg = sum p g. ``best_row`` (relative to the chunk) is located only where the chunk
    beats ``best_so_far`` and its largest weight is at least ``MODE_MIN_MASS`` (else -1): more rows only lower
    a mode's mass, so a mode row is known wherever its final mass reaches ``MODE_MIN_MASS``. Every query's
    argmax is taken, so that nothing waits for the device."""
    logit = torch.mul(d, a).add_(g, alpha=b).clamp_(min=LOGIT_MIN)  # a d overflows to -inf at huge d, tiny s
    best = logit.amax(1)
    p = torch.softmax(logit, 1)
    top = p.amax(1)
    located = (best.double() > best_so_far) & (top >= MODE_MIN_MASS)
    best_row = torch.where(located, logit.argmax(1).double(), -1.0)
    zh, zg = torch.mul(p, h, out=logit).sum(1), torch.mul(p, g, out=logit).sum(1)
    best = best.double()
    return torch.stack([best - top.double().log(), torch.ones_like(best), zh.double(), zg.double(), best, best_row])


@functools.cache
def cpu_kernel() -> ModuleType | None:
    """``diffloss.optimal.kernel``, imported (and its compiled code loaded) on first use; None where numba is not
    installed or cannot compile (it raises RuntimeError where no cache directory is writable), with a warning: a
    CPU then runs the torch path of CUDA (same numbers, several times slower)."""
    try:
        return importlib.import_module("diffloss.optimal.kernel")
    except (ImportError, RuntimeError) as err:
        warnings.warn(f"the exact optimal loss runs its slower torch path on the CPU ({err}); pip install numba, "
                      "or point NUMBA_CACHE_DIR to a writable directory", stacklevel=3)  # fmt: skip
        return None


def posterior_sums(
    x0: torch.Tensor,
    eps: torch.Tensor,
    rows: Rows,
    sigmas: np.ndarray,
    *,
    chunk_rows: int = 4096,
    row_offset: int = 0,
    threads: int = 1,
    sync_free: bool | None = None,
) -> PosteriorSums:
    """The posterior state of queries (x0, eps), both (q, D) fp32, over ``rows`` at every s in ``sigmas``.

    ``x0`` must be rows of the full data set (the posterior's source rows); ``rows`` may be any subset (a
    shard starting at global row ``row_offset``), in which case the result merges exactly with the other
    shards' states. All tensors live on one device; on CUDA the chunk loop never waits for the GPU (see the
    module docstring), and a call whose near entries overflowed the fixed capacity is redone once with exact
    counting (one host sync per call). On a CPU ``threads`` > 1 splits the rows over that many threads
    (``on_row_shards``), whose states merge exactly. ``sync_free`` (default: on CUDA) picks the CUDA code path
    on any device (the tests run it on a CPU).
    """
    qs = Queries.of(x0, eps)
    sync_free = x0.is_cuda if sync_free is None else sync_free
    use_kernel = not sync_free and cpu_kernel() is not None

    def shard(part: Rows, lo: int) -> PosteriorSums:
        if use_kernel:
            return _kernel_posterior_sums(qs, part, sigmas, chunk_rows, row_offset + lo)
        return _redone_on_overflow(
            functools.partial(_posterior_sums, qs, part, sigmas, chunk_rows, row_offset + lo), qs, sync_free
        )

    states = on_row_shards(shard, rows, chunk_rows, threads)
    return states[0] if len(states) == 1 else functools.reduce(PosteriorSums.merge, states).renormalized()


def on_row_shards(fn: Callable[[Rows, int], T], rows: Rows, chunk_rows: int, threads: int) -> list[T]:
    """``fn(shard, start)`` over contiguous shards of ``rows`` of equal size (within a row), one per thread (at most
    ``threads`` and at most one per chunk; one on CUDA, whose kernels are parallel already). Torch and the numba
    kernel release the GIL, so with one intra-op thread each (the caller's business) the shards run in parallel
    with no synchronisation but the final join: many small array passes then scale with cores even on a busy
    machine, where intra-op threads wait at every op for a descheduled partner."""
    chunks = -(-len(rows) // chunk_rows)
    shards = 1 if rows.x.is_cuda else max(1, min(threads, chunks))
    cuts = [len(rows) * i // shards for i in range(shards + 1)]
    if shards == 1:
        return [fn(rows, 0)]
    with ThreadPoolExecutor(shards) as pool:
        return list(pool.map(lambda i: fn(rows.view(cuts[i], cuts[i + 1]), cuts[i]), range(shards)))


def _redone_on_overflow(pass_: Callable[[torch.Tensor | None], T], qs: Queries, sync_free: bool) -> T:
    """``pass_(overflow)`` over the rows: ``sync_free`` (CUDA), first with a device flag (near pairs at fixed
    capacity, no host sync), redone with exact counting if the flag was set (one host sync per call); else
    exact at once."""
    if sync_free:
        overflow = torch.zeros((), dtype=torch.bool, device=qs.x0.device)
        out = pass_(overflow)
        if not overflow.item():
            return out
    return pass_(None)


def _posterior_sums(
    qs: Queries, rows: Rows, sigmas: np.ndarray, chunk_rows: int, row_offset: int, overflow: torch.Tensor | None
) -> PosteriorSums:
    """The sync-free (CUDA) pass: per chunk, the terms and every level's state in torch ops, merged."""
    state = PosteriorSums.empty(len(sigmas), qs.x0.shape[0], qs.x0.device)
    coef = list(zip(*(c.tolist() for c in logit_coefficients(sigmas))))
    for lo in range(0, len(rows), chunk_rows):
        d, g, h = _chunk_terms(qs, rows.block(lo, lo + chunk_rows), overflow)
        parts = [_level_sums(d, g, h, a, b, state.best[k]) for k, (a, b) in enumerate(coef)]
        parts = torch.stack(parts, 1)
        parts[5] += row_offset + lo
        state = state.merge(PosteriorSums.unstack(parts)).renormalized()
    return state


def _kernel_posterior_sums(
    qs: Queries, rows: Rows, sigmas: np.ndarray, chunk_rows: int, row_offset: int
) -> PosteriorSums:
    """The CPU pass: per chunk, the Gram products (one torch GEMM), then ``kernel.chunk_update``."""
    chunk_update = cpu_kernel().chunk_update
    q = qs.x0.shape[0]
    state = PosteriorSums.empty(len(sigmas), q).stack().numpy()
    a, b = logit_coefficients(sigmas)
    x0, eps, x0_sq, eps_x0 = (t.contiguous().numpy() for t in (qs.x0, qs.eps, qs.x0_sq, qs.eps_x0))
    for lo, y, sq, gram in _chunk_grams(qs.both, rows, chunk_rows):
        chunk_update(gram[:q], gram[q:], x0_sq, eps_x0, sq, x0, eps, y, a, b, state, row_offset + lo, NEAR_TOL,
                     EXP_MIN, MODE_MIN_MASS)  # fmt: skip
    return PosteriorSums.unstack(torch.from_numpy(state)).renormalized()


def _chunk_grams(
    left: torch.Tensor, rows: Rows, chunk_rows: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Per chunk of ``rows`` (fp32, on a CPU): its start, its rows (n, D) and norms (n,) as numpy arrays, and the
    Gram products left . rows^T (m, n), written into one buffer reused by every chunk (no fresh pages per chunk)."""
    buf = torch.empty(left.shape[0] * min(chunk_rows, len(rows)))
    for lo in range(0, len(rows), chunk_rows):
        block = rows.block(lo, lo + chunk_rows)
        y = block.x.contiguous()
        gram = buf[: left.shape[0] * len(y)].view(left.shape[0], len(y))
        torch.mm(left, y.T, out=gram)
        yield lo, y.numpy(), block.sq.contiguous().numpy(), gram.numpy()


@dataclass(frozen=True)
class ModePairs:
    """P (level, query) pairs for ``mode_sums``: ``query`` (P,) long indexes the queries, ``mode`` (P,) long the
    distinct mode rows, ``sigma`` and ``shift`` (P,) float64 are the pair's level and final shift (from
    ``posterior_sums``)."""

    query: torch.Tensor
    mode: torch.Tensor
    sigma: torch.Tensor
    shift: torch.Tensor


def mode_sums(
    x0: torch.Tensor,
    eps: torch.Tensor,
    modes: torch.Tensor,
    pairs: ModePairs,
    rows: Rows,
    *,
    chunk_rows: int = 4096,
    pair_block: int = 256,
    threads: int = 1,
    sync_free: bool | None = None,
) -> torch.Tensor:
    """A second pass for P (level, query) pairs: sum_i exp(delta_i - shift) <mode, y_i>, float64 (P,).

    Queries (x0, eps), both (q, D) fp32, and the distinct mode rows ``modes`` (M, D) fp32; pair p is query
    pairs.query[p] at level pairs.sigma[p] with mode row modes[pairs.mode[p]]. Divided by the final z it is
    <mode, m>. The rows are split over ``threads`` as in ``posterior_sums``. On a CPU the pairs, sorted by query, go
    ``CPU_MODE_PAIRS`` at a time (each query's terms and each mode's Gram products computed once per chunk,
    ``kernel.mode_update``); on the sync-free (CUDA) path ``pair_block`` pairs at a time, in torch ops."""
    sync_free = x0.is_cuda if sync_free is None else sync_free
    if not len(pairs.query):
        return torch.zeros(0, dtype=torch.float64, device=x0.device)
    if not sync_free and cpu_kernel() is not None:
        order = torch.argsort(pairs.query, stable=True)
        out = torch.empty(len(order), dtype=torch.float64)
        for p0 in range(0, len(order), CPU_MODE_PAIRS):
            sub = order[p0 : p0 + CPU_MODE_PAIRS]
            block = ModePairs(pairs.query[sub], pairs.mode[sub], pairs.sigma[sub], pairs.shift[sub])
            shard = _kernel_mode_pass(x0, eps, modes, block, chunk_rows)
            out[sub] = sum(on_row_shards(shard, rows, chunk_rows, threads))
        return out
    parts = []
    for p0 in range(0, len(pairs.query), pair_block):
        sl = slice(p0, p0 + pair_block)
        qs = Queries.of(x0[pairs.query[sl]], eps[pairs.query[sl]])
        block = (modes[pairs.mode[sl]], pairs.sigma[sl], pairs.shift[sl])

        def shard(part: Rows, lo: int, qs: Queries = qs, block: tuple = block) -> torch.Tensor:
            return _redone_on_overflow(functools.partial(_mode_sums, qs, *block, part, chunk_rows), qs, sync_free)

        parts.append(sum(on_row_shards(shard, rows, chunk_rows, threads)))
    return torch.cat(parts)


def _mode_sums(
    qs: Queries, modes: torch.Tensor, sigmas: torch.Tensor, shift: torch.Tensor, rows: Rows, chunk_rows: int,
    overflow: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    a, b = (torch.from_numpy(c).to(modes.device)[:, None] for c in logit_coefficients(sigmas.cpu().numpy()))
    total = torch.zeros(len(modes), dtype=torch.float64, device=modes.device)
    for lo in range(0, len(rows), chunk_rows):
        block = rows.block(lo, lo + chunk_rows)
        d, g, _ = _chunk_terms(qs, block, overflow)
        e = (d * a).add_(g * b).sub_(shift.float()[:, None]).clamp_(min=EXP_MIN).exp_().sub_(_EXP_MIN_VALUE)
        total += (e * (modes @ block.x.T)).sum(1).double()
    return total


def _kernel_mode_pass(
    x0: torch.Tensor, eps: torch.Tensor, modes: torch.Tensor, pairs: ModePairs, chunk_rows: int
) -> Callable[[Rows, int], torch.Tensor]:
    """The CPU mode pass for ``pairs`` sorted by query, as ``fn(shard, start)`` for ``on_row_shards``: prepared once
    (the queries that have pairs, the modes they use), then per shard one GEMM per chunk for both and
    ``kernel.mode_update``."""
    queries, counts = torch.unique_consecutive(pairs.query, return_counts=True)
    used, pair_mode = torch.unique(pairs.mode, return_inverse=True)
    start = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).numpy()
    qs = Queries.of(x0[queries], eps[queries])
    u = len(queries)
    a, b = logit_coefficients(pairs.sigma.double().numpy())
    shift, pair_mode = pairs.shift.double().contiguous().numpy(), pair_mode.contiguous().numpy()
    x0_u, eps_u, x0_sq, eps_x0 = (t.contiguous().numpy() for t in (qs.x0, qs.eps, qs.x0_sq, qs.eps_x0))
    left = torch.cat([qs.both, modes[used]])
    mode_update = cpu_kernel().mode_update

    def shard(part: Rows, _lo: int) -> torch.Tensor:
        total = np.zeros(len(pair_mode))
        for _, y, sq, gram in _chunk_grams(left, part, chunk_rows):
            mode_update(gram[:u], gram[u : 2 * u], gram[2 * u :], x0_sq, eps_x0, sq, x0_u, eps_u, y, start, pair_mode,
                        a, b, shift, total, NEAR_TOL, EXP_MIN)  # fmt: skip
        return torch.from_numpy(total)

    return shard


def posterior_mean(
    x0: torch.Tensor, eps: torch.Tensor, rows: Rows, sigmas: np.ndarray, *, chunk_rows: int = 4096
) -> torch.Tensor:
    """The posterior mean m(x) = sum_i softmax_i(-||x - y_i||^2 / (2 s^2)) y_i at x = x0 + s eps, float64
    (L, q, D), for queries (x0, eps), both (q, D) fp32, over all ``rows`` at every s in ``sigmas``.

    Streamed over row chunks with a running log-sum-exp; logits come from the same (d, g) terms as
    ``posterior_sums`` (near entries exact in float64), the weighted sums of rows are float64."""
    L, (q, dim) = len(sigmas), x0.shape
    qs = Queries.of(x0, eps)
    shift = torch.full((L, q), -math.inf, dtype=torch.float64, device=x0.device)
    z = torch.zeros(L, q, dtype=torch.float64, device=x0.device)
    acc = torch.zeros(L, q, dim, dtype=torch.float64, device=x0.device)
    for lo in range(0, len(rows), chunk_rows):
        block = rows.block(lo, lo + chunk_rows)
        d, g, _ = _chunk_terms(qs, block)
        y = block.x.double()
        for k, s in enumerate(float(v) for v in sigmas):
            logit = d.double() * (-0.5 / s**2) - g.double() / s
            new = torch.maximum(shift[k], logit.amax(1))
            scale = torch.exp(shift[k] - new)
            e = torch.exp(logit - new[:, None])
            z[k] = z[k] * scale + e.sum(1)
            acc[k] = acc[k] * scale[:, None] + e @ y
            shift[k] = new
    return acc / z[..., None]
