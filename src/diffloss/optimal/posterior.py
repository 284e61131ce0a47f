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

Numerics: the Gram products [x0; eps] . Y^T are fp32 GEMMs computed once per chunk and shared by every
level. Entries whose fp32 distance is within ``NEAR_TOL`` (relative) of 0 — the source row, duplicates and
near-duplicates, where fp32 cancellation would matter at small s — are recomputed exactly in float64.
Per level, a chunk's weights are ``torch.softmax`` of its logits (one fused max / exp / normalize kernel, the
fastest exp torch has on a CPU): its state is shift = the chunk's log-sum-exp, z = 1, and the softmax-weighted
sums of h and g; chunk states merge exactly. Weights below exp(-87) of a chunk's largest (fp32's smallest
normal) may flush to 0; the source row's own weight is exp(0 - shift) exactly as any other row's, and a
posterior collapsed onto it gives <x0, x0 - m> = 0 up to such weights (the mode-row control then gives 0
exactly). On the CPU, per chunk, a bound on every far logit (from the smallest far distance and the largest
-g / sqrt(d)) lets a level skip the queries whose far rows would all fall below ``EXP_MIN``: only their near
entries are summed. On CUDA nothing waits for the GPU inside the chunk loop: no level is skipped (the bound
needs a host decision), the near entries are found with a fixed capacity (``NEAR_PER_QUERY``; an overflow is
noticed once per call and the call redone with exact counting), and the mode row is an argmax over the chunk.
The state also tracks the posterior mode (largest logit and its row), and ``mode_sums`` is a second pass over
the rows for (level, query) pairs whose mode row is the control.

Rows (``Rows``) are fp32 centered rows, or any float storage (bf16 on a GPU) with an fp32 offset subtracted
chunk by chunk (``Rows.block``): a data set in bf16 is then exactly its bf16 values, computed on in fp32.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

T = TypeVar("T")
NEAR_TOL = 1e-3  # relative distance below which an entry is recomputed exactly in float64
EXP_MIN = -87.0  # shifted logits below this count as weight 0 (exp(-87) ~ 1.6e-38, fp32's smallest normal)
_EXP_MIN_VALUE = float(torch.exp(torch.tensor(EXP_MIN)))
MODE_MIN_MASS = 0.5  # the mode row is located where the mode holds at least this posterior mass
NEAR_PER_QUERY = 16  # CUDA: near entries per query and chunk found without a host sync (more: the call is redone)


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
        sq = [ref._fp32(x[lo : lo + chunk_rows]).double().pow(2).sum(1).float() for lo in range(0, len(x), chunk_rows)]
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
        """The per-dimension variance of the rows, averaged over dimensions."""
        if self.offset is None:
            return float(self.x.var(0, unbiased=False).mean())
        n, dim = self.x.shape  # centered by their own mean: the variance is the mean squared norm
        return float(self.sq.double().sum()) / (n * dim)

    def max_sq(self, chunk_rows: int = 65536) -> float:
        """The largest squared norm of a row, in float64."""
        blocks = (self.block(lo, lo + chunk_rows).x for lo in range(0, len(self), chunk_rows))
        return max(float(b.double().pow(2).sum(1).max()) for b in blocks)

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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """fp32 (d, g, h), each (q, n), for the queries against fp32 ``rows``, with the near entries (their (query,
    row) indices are returned too) made exact (``overflow``: see ``near_pairs``)."""
    q = qs.x0.shape[0]
    gram = qs.both @ rows.x.T
    g0, ge = gram[:q], gram[q:]
    h = qs.x0_sq[:, None] - g0
    d = (h + rows.sq[None, :]).sub_(g0).clamp_(min=0.0)
    g = qs.eps_x0[:, None] - ge
    qi, ri = near = near_pairs(d, qs.x0_sq, rows.sq, overflow)
    de, gx, hx = _exact_entries(qs.x0, qs.eps, rows.x, qi, ri)
    d[near], g[near], h[near] = de.float(), gx.float(), hx.float()
    return d, g, h, near


def _far_reach(d: torch.Tensor, g: torch.Tensor, near: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(2, q) float64: per query, the smallest distance d_min and the largest t = -g / sqrt(d) over the far
    (not near) entries. Every far logit then obeys delta = -d / (2 s^2) - g / s <= -d / (2 s^2) + t sqrt(d) / s,
    bounded by ``_logit_bound``."""
    df = d.clone()
    df[near] = math.inf
    t = g.div(df.sqrt()).neg_()
    t[near] = -math.inf
    return torch.stack([df.amin(1), t.amax(1)]).double()


def _logit_bound(reach: torch.Tensor, s: float) -> torch.Tensor:
    """Upper bound (q,) of the far logits at level s: max over r >= sqrt(d_min) of -r^2/(2 s^2) + t r / s."""
    r0, t = reach[0].sqrt(), reach[1]
    at_r0 = -(r0**2) / (2 * s * s) + t * r0 / s
    return torch.where(r0 >= s * t, at_r0, t * t / 2)


def _near_sums(
    d: torch.Tensor, g: torch.Tensor, h: torch.Tensor, near: tuple[torch.Tensor, torch.Tensor], inv2s2: float,
    invs: float, shift: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """The chunk state (6, q) of the near entries alone (every far weight is 0 at this level), in float64."""
    qi, ri = near
    q = d.shape[0]
    logit = -d[near].double() * inv2s2 - g[near].double() * invs
    e = torch.exp(logit - shift[qi])
    zeros = torch.zeros(q, dtype=torch.float64, device=d.device)
    sums = [zeros.index_add(0, qi, v) for v in (e, e * h[near].double(), e * g[near].double())]
    best = torch.full_like(zeros, -math.inf).scatter_reduce(0, qi, logit, "amax")
    best_row = torch.full_like(zeros, -1.0)
    top = logit == best[qi]
    best_row[qi[top]] = ri[top].double()
    return torch.stack([shift, *sums, best, best_row])


def _mode_rows(logit: torch.Tensor, best: torch.Tensor, located: torch.Tensor, sync_free: bool) -> torch.Tensor:
    """(q,) float64 row (in the chunk) of each query's largest logit where ``located``, else -1. Only those
    queries are searched (argmax is not vectorized on a CPU), or (``sync_free``, for CUDA) all are, without a
    host sync."""
    if sync_free:
        return torch.where(located, logit.argmax(1).double(), -1.0)
    rows = torch.full_like(best, -1.0, dtype=torch.float64)
    if located.any():
        rows[located] = logit[located].argmax(1).double()
    return rows


def _level_sums(
    d: torch.Tensor, g: torch.Tensor, h: torch.Tensor, inv2s2: float, invs: float, best_so_far: torch.Tensor,
    sync_free: bool = False,
) -> torch.Tensor:  # fmt: skip
    """One level's chunk state (6, q) = (shift, z, zh, zg, best, best_row) with z = 1.

    The weights are p = softmax(logits): shift = log-sum-exp = best - log(max p) (p is 1 / sum at the largest
    logit), zh = sum p h, zg = sum p g. ``best_row`` (relative to the chunk) is located only where the chunk
    beats ``best_so_far`` and its largest weight is at least ``MODE_MIN_MASS`` (else -1): more rows only lower
    a mode's mass, so a mode row is known wherever its final mass reaches ``MODE_MIN_MASS``."""
    logit = torch.mul(d, -inv2s2).sub_(g, alpha=invs)
    best = logit.amax(1)
    p = torch.softmax(logit, 1)
    top = p.amax(1)
    best_row = _mode_rows(logit, best, (best.double() > best_so_far) & (top >= MODE_MIN_MASS), sync_free)
    zh, zg = torch.mul(p, h, out=logit).sum(1), torch.mul(p, g, out=logit).sum(1)
    best = best.double()
    return torch.stack([best - top.double().log(), torch.ones_like(best), zh.double(), zg.double(), best, best_row])


def _skipping_level_sums(
    d: torch.Tensor, g: torch.Tensor, h: torch.Tensor, near: tuple[torch.Tensor, torch.Tensor], reach: torch.Tensor,
    s: float, shift: torch.Tensor, best_so_far: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """``_level_sums`` at level s, where the queries whose far logits all fall below the exp range (by the
    bound ``reach`` and the running ``shift``) contribute only their near entries (``_near_sums``)."""
    inv2s2, invs = 0.5 / s**2, 1.0 / s
    active = _logit_bound(reach, s) - shift >= EXP_MIN - 8
    if active.all():
        return _level_sums(d, g, h, inv2s2, invs, best_so_far)
    part = _near_sums(d, g, h, near, inv2s2, invs, shift)
    if active.any():
        part[:, active] = _level_sums(d[active], g[active], h[active], inv2s2, invs, best_so_far[active])
    return part


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

    def shard(part: Rows, lo: int) -> PosteriorSums:
        return _redone_on_overflow(
            functools.partial(_posterior_sums, qs, part, sigmas, chunk_rows, row_offset + lo), qs, sync_free
        )

    states = on_row_shards(shard, rows, chunk_rows, threads)
    return states[0] if len(states) == 1 else functools.reduce(PosteriorSums.merge, states).renormalized()


def on_row_shards(fn: Callable[[Rows, int], T], rows: Rows, chunk_rows: int, threads: int) -> list[T]:
    """``fn(shard, start)`` over contiguous shards of whole chunks of ``rows``, one per thread (at most
    ``threads``; one on CUDA, whose kernels are parallel already). Torch releases the GIL inside its ops, so with
    one intra-op thread each (the caller's business) the shards run in parallel with no synchronisation but
    the final join: many small array passes then scale with cores even on a busy machine, where intra-op
    threads wait at every op for a descheduled partner."""
    chunks = -(-len(rows) // chunk_rows)
    shards = 1 if rows.x.is_cuda else max(1, min(threads, chunks))
    cuts = [min(len(rows), chunk_rows * (chunks * i // shards)) for i in range(shards + 1)]
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
    L, q = len(sigmas), qs.x0.shape[0]
    skip = overflow is None  # the level-skipping bound needs host decisions: not on the sync-free path
    state = PosteriorSums.empty(L, q, qs.x0.device)
    inv2s2 = [0.5 / float(s) ** 2 for s in sigmas]
    invs = [1.0 / float(s) for s in sigmas]
    for lo in range(0, len(rows), chunk_rows):
        d, g, h, near = _chunk_terms(qs, rows.block(lo, lo + chunk_rows), overflow)
        if not skip:
            parts = [_level_sums(d, g, h, inv2s2[k], invs[k], state.best[k], sync_free=True) for k in range(L)]
        else:
            reach = _far_reach(d, g, near)
            parts = [
                _skipping_level_sums(d, g, h, near, reach, float(sigmas[k]), state.shift[k], state.best[k])
                for k in range(L)
            ]
        parts = torch.stack(parts, 1)
        parts[5] += row_offset + lo
        state = state.merge(PosteriorSums.unstack(parts)).renormalized()
    return state


def mode_sums(
    x0: torch.Tensor,
    eps: torch.Tensor,
    modes: torch.Tensor,
    sigmas: torch.Tensor,
    shift: torch.Tensor,
    rows: Rows,
    *,
    chunk_rows: int = 4096,
    pair_block: int = 256,
    threads: int = 1,
    sync_free: bool | None = None,
) -> torch.Tensor:
    """A second pass for P (level, query) pairs: sum_i exp(delta_i - shift) <mode, y_i>, float64 (P,).

    Pair p has source x0[p], noise eps[p], level sigmas[p], final shift[p] (from ``posterior_sums``) and
    mode row modes[p]; all but ``shift`` are fp32. Divided by the final z it is <mode, m>. Pairs go through
    the rows ``pair_block`` at a time (the working memory of a query block), the rows split over ``threads`` and
    ``sync_free`` as in ``posterior_sums``."""
    sync_free = x0.is_cuda if sync_free is None else sync_free
    parts = []
    for p0 in range(0, len(x0), pair_block):
        sl = slice(p0, p0 + pair_block)
        qs = Queries.of(x0[sl], eps[sl])
        pairs = (modes[sl], sigmas[sl], shift[sl])

        def shard(part: Rows, lo: int, qs: Queries = qs, pairs: tuple = pairs) -> torch.Tensor:
            return _redone_on_overflow(functools.partial(_mode_sums, qs, *pairs, part, chunk_rows), qs, sync_free)

        parts.append(sum(on_row_shards(shard, rows, chunk_rows, threads)))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=x0.device)


def _mode_sums(
    qs: Queries, modes: torch.Tensor, sigmas: torch.Tensor, shift: torch.Tensor, rows: Rows, chunk_rows: int,
    overflow: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    a, b = (-0.5 / sigmas**2).float()[:, None], (1.0 / sigmas).float()[:, None]
    total = torch.zeros(len(modes), dtype=torch.float64, device=modes.device)
    for lo in range(0, len(rows), chunk_rows):
        block = rows.block(lo, lo + chunk_rows)
        d, g, _, _ = _chunk_terms(qs, block, overflow)
        e = (d * a).sub_(g * b).sub_(shift.float()[:, None]).clamp_(min=EXP_MIN).exp_().sub_(_EXP_MIN_VALUE)
        total += (e * (modes @ block.x.T)).sum(1).double()
    return total


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
        d, g, _, _ = _chunk_terms(qs, block)
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
