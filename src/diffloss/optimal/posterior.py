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
Each chunk is exponentiated against the running shift (initially 0, the source row's logit); the rare
(level, query) pairs that would overflow are redone against their own maximum, and shifted logits below
``EXP_MIN`` count as weight exactly 0 (so a posterior collapsed onto the source row gives exactly 0).
Per chunk, a bound on every far logit (from the smallest far distance and the largest -g / sqrt(d)) lets a
level skip the queries whose far rows would all fall below ``EXP_MIN``: only their near entries are summed,
with identical results. The state also tracks the posterior mode (largest logit and its row), and
``mode_sums`` is a second pass over the rows for (level, query) pairs whose mode row is the control.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

NEAR_TOL = 1e-3  # relative distance below which an entry is recomputed exactly in float64
EXP_MIN = -87.0  # shifted logits below this count as weight 0 (exp(-87) ~ 1.6e-38, fp32's smallest normal)
_EXP_MIN_VALUE = float(torch.exp(torch.tensor(EXP_MIN)))


@dataclass
class PosteriorSums:
    """Shifted log-sum-exp state per (level, query), float64 tensors of shape (L, Q).

    ``best`` is the largest logit seen and ``best_row`` its row (a global row index, as float64 so that the
    whole state travels as one tensor): the posterior mode, with weight exp(best - shift) / z."""

    shift: torch.Tensor
    z: torch.Tensor
    zh: torch.Tensor
    zg: torch.Tensor
    best: torch.Tensor
    best_row: torch.Tensor

    @staticmethod
    def empty(n_levels: int, n_queries: int) -> PosteriorSums:
        zeros = torch.zeros(n_levels, n_queries, dtype=torch.float64)
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
        """The same state with the shift moved to the log-sum-exp (keeps z near 1; z = 0 stays as is)."""
        pos = self.z > 0
        lz = torch.where(pos, torch.log(torch.where(pos, self.z, 1.0)), 0.0)
        scale = torch.exp(-lz)
        return PosteriorSums(
            self.shift + lz, self.z * scale, self.zh * scale, self.zg * scale, self.best, self.best_row
        )

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
    """Data rows (n, D) fp32 with their squared norms (n,), computed once in float64."""

    x: torch.Tensor
    sq: torch.Tensor

    @staticmethod
    def of(x: torch.Tensor) -> Rows:
        return Rows(x, x.double().pow(2).sum(1).float())

    def __len__(self) -> int:
        return self.x.shape[0]


def near_pairs(d: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) indices of the entries of a (q, n) matrix of squared distances ``d`` (from the expanded
    form ||a||^2 + ||b||^2 - 2 <a, b> in fp32) that must be recomputed exactly in float64: those within
    ``NEAR_TOL`` of the norms they cancel, d <= NEAR_TOL * (||a||^2 + ||b||^2) (duplicates and near-duplicates;
    fp32's relative error of the expanded form is then at most ~1e-4 of d). The one near-duplicate rule of every
    optimal-loss estimator; ``sq_a`` (q,), ``sq_b`` (n,) are the squared norms of the (centered) rows."""
    near = d <= NEAR_TOL * (sq_a[:, None] + sq_b[None, :]).to(d.dtype)
    return torch.nonzero(near, as_tuple=True)


def _exact_entries(
    x0: torch.Tensor, eps: torch.Tensor, rows: torch.Tensor, qi: torch.Tensor, ri: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 (d, g, h) for the (query, row) pairs (qi, ri)."""
    a = x0[qi].double()
    diff = a - rows[ri].double()
    return (diff * diff).sum(1), (eps[qi].double() * diff).sum(1), (a * diff).sum(1)


def _chunk_terms(
    x0: torch.Tensor, eps: torch.Tensor, queries: torch.Tensor, rows: Rows, x0_sq: torch.Tensor, eps_x0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """fp32 (d, g, h), each (q, n), for queries (x0, eps) against ``rows``, with the near entries (their
    (query, row) indices are returned too) made exact.

    ``queries`` is [x0; eps] stacked, (2q, D): one GEMM gives both Gram products."""
    q = x0.shape[0]
    gram = queries @ rows.x.T
    g0, ge = gram[:q], gram[q:]
    h = x0_sq[:, None] - g0
    d = (h + rows.sq[None, :]).sub_(g0).clamp_(min=0.0)
    g = eps_x0[:, None] - ge
    qi, ri = near_pairs(d, x0_sq, rows.sq)
    if len(qi):
        de, gx, hx = _exact_entries(x0, eps, rows.x, qi, ri)
        d[qi, ri], g[qi, ri], h[qi, ri] = de.float(), gx.float(), hx.float()
    return d, g, h, (qi, ri)


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
    zeros = torch.zeros(q, dtype=torch.float64)
    sums = [zeros.index_add(0, qi, v) for v in (e, e * h[near].double(), e * g[near].double())]
    best = torch.full((q,), -math.inf, dtype=torch.float64).scatter_reduce(0, qi, logit, "amax")
    best_row = torch.full((q,), -1.0, dtype=torch.float64)
    top = logit == best[qi]
    best_row[qi[top]] = ri[top].double()
    return torch.stack([shift, *sums, best, best_row])


def _shifted_sums(logit: torch.Tensor, h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(3, q) float64 sums of e, e*h, e*g with e = exp(logit), computed in place on ``logit``.

    Logits below ``EXP_MIN`` count as exactly 0 (exp's underflow path is ~100x slower than its normal path,
    and weights of exp(-87) ~ 1e-38 relative to the source row's are far below fp32 resolution anyway)."""
    e = logit.clamp_(min=EXP_MIN).exp_().sub_(_EXP_MIN_VALUE)
    buf = torch.empty_like(e)
    return torch.stack([e.sum(1), torch.mul(e, h, out=buf).sum(1), torch.mul(e, g, out=buf).sum(1)]).double()


def _logits(d: torch.Tensor, g: torch.Tensor, inv2s2: float, invs: float) -> torch.Tensor:
    return torch.mul(d, -inv2s2).sub_(g, alpha=invs)


def _level_sums(
    d: torch.Tensor,
    g: torch.Tensor,
    h: torch.Tensor,
    inv2s2: float,
    invs: float,
    shift: torch.Tensor,
    best_so_far: torch.Tensor,
) -> torch.Tensor:
    """One level's chunk state (6, q) = (shift, z, zh, zg, best, best_row) against the running ``shift`` (q,).

    ``best_row`` (relative to the chunk) is only located where the chunk beats ``best_so_far`` (else -1).
    Queries whose largest logit exceeds the running shift by more than fp32's exp range are redone against
    their own maximum."""
    logit = _logits(d, g, inv2s2, invs)
    best = logit.amax(1)
    best_row = torch.full_like(best, -1.0)
    upd = best.double() > best_so_far
    if upd.any():
        best_row[upd] = logit[upd].argmax(1).float()
    sums = _shifted_sums(logit.sub_(shift.float()[:, None]), h, g)
    shift = shift.clone()
    bad = ~torch.isfinite(sums).all(0)
    if bad.any():
        lb = _logits(d[bad], g[bad], inv2s2, invs)
        sums[:, bad] = _shifted_sums(lb.sub_(best[bad][:, None]), h[bad], g[bad])
        shift[bad] = best[bad].double()
    return torch.cat([shift[None], sums, best.double()[None], best_row.double()[None]])


def posterior_sums(
    x0: torch.Tensor,
    eps: torch.Tensor,
    rows: Rows,
    sigmas: np.ndarray,
    *,
    chunk_rows: int = 4096,
    row_offset: int = 0,
) -> PosteriorSums:
    """The posterior state of queries (x0, eps), both (q, D) fp32, over ``rows`` at every s in ``sigmas``.

    ``x0`` must be rows of the full data set (the posterior's source rows); ``rows`` may be any subset (a
    shard starting at global row ``row_offset``), in which case the result merges exactly with the other
    shards' states.
    """
    L, q = len(sigmas), x0.shape[0]
    x0_sq = x0.double().pow(2).sum(1).float()
    eps_x0 = (eps.double() * x0.double()).sum(1).float()
    queries = torch.cat([x0, eps])
    state = PosteriorSums.empty(L, q)
    inv2s2 = [0.5 / float(s) ** 2 for s in sigmas]
    invs = [1.0 / float(s) for s in sigmas]
    for lo in range(0, len(rows), chunk_rows):
        block = Rows(rows.x[lo : lo + chunk_rows], rows.sq[lo : lo + chunk_rows])
        d, g, h, near = _chunk_terms(x0, eps, queries, block, x0_sq, eps_x0)
        reach = _far_reach(d, g, near)
        parts = []
        for k in range(L):
            # queries whose far logits all fall below the exp range contribute only their near entries
            active = _logit_bound(reach, float(sigmas[k])) - state.shift[k] >= EXP_MIN - 8
            if active.all():
                parts.append(_level_sums(d, g, h, inv2s2[k], invs[k], state.shift[k], state.best[k]))
                continue
            part = _near_sums(d, g, h, near, inv2s2[k], invs[k], state.shift[k])
            if active.any():
                part[:, active] = _level_sums(
                    d[active], g[active], h[active], inv2s2[k], invs[k], state.shift[k][active], state.best[k][active]
                )
            parts.append(part)
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
) -> torch.Tensor:
    """A second pass for P (level, query) pairs: sum_i exp(delta_i - shift) <mode, y_i>, float64 (P,).

    Pair p has source x0[p], noise eps[p], level sigmas[p], final shift[p] (from ``posterior_sums``) and
    mode row modes[p]; all but ``shift`` are fp32. Divided by the final z it is <mode, m>."""
    x0_sq = x0.double().pow(2).sum(1).float()
    eps_x0 = (eps.double() * x0.double()).sum(1).float()
    queries = torch.cat([x0, eps])
    a, b = (-0.5 / sigmas**2).float()[:, None], (1.0 / sigmas).float()[:, None]
    total = torch.zeros(len(x0), dtype=torch.float64)
    for lo in range(0, len(rows), chunk_rows):
        block = Rows(rows.x[lo : lo + chunk_rows], rows.sq[lo : lo + chunk_rows])
        d, g, _, _ = _chunk_terms(x0, eps, queries, block, x0_sq, eps_x0)
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
    x0_sq = x0.double().pow(2).sum(1).float()
    eps_x0 = (eps.double() * x0.double()).sum(1).float()
    queries = torch.cat([x0, eps])
    shift = torch.full((L, q), -math.inf, dtype=torch.float64)
    z = torch.zeros(L, q, dtype=torch.float64)
    acc = torch.zeros(L, q, dim, dtype=torch.float64)
    for lo in range(0, len(rows), chunk_rows):
        block = Rows(rows.x[lo : lo + chunk_rows], rows.sq[lo : lo + chunk_rows])
        d, g, _, _ = _chunk_terms(x0, eps, queries, block, x0_sq, eps_x0)
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
