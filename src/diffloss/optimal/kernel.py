"""The CPU kernel of the exact estimator: one pass over a chunk of rows updates every (level, query) state.

``posterior.posterior_sums`` on a CPU computes each chunk's Gram products with one fp32 GEMM (torch) and hands
them to ``chunk_update``, which does everything else per query while its row of the chunk sits in the L1 cache:

1. the terms d_i = ||x0 - y_i||^2, g_i = <eps, x0 - y_i>, h_i = <x0, x0 - y_i> from the Gram products and the
   norms (fp32), with the near entries (``NEAR_TOL``: the source row, duplicates, near-duplicates) recomputed
   exactly in float64 — the rule of ``posterior.near_pairs``;
2. per level (a, b from ``posterior.logit_coefficients``): the logits a d + b g and their largest value, then,
   unless the chunk's largest logit lies below the running shift by more than ``8 - EXP_MIN`` (all its weights
   would underflow), the weights e_i = exp(logit_i - max) (exactly 0 below ``EXP_MIN``) and their sums z, zh,
   zg, merged into the running state;
3. the posterior mode: the largest logit and, where the chunk beats the running best and its largest weight
   is at least ``MODE_MIN_MASS`` of the chunk, its row.

The exponential is a vectorizable fp32 one (Cody-Waite reduction, degree-7 polynomial, exponent by bit
construction: relative error < 3e-7 on [EXP_MIN, 0]) and the largest logit an integer max over order-preserving
keys of the float bits (float max reductions do not vectorize), so a level's two passes run in SIMD registers
over L1-resident data, with none of the temporaries a chain of torch ops writes: about 0.35 ns per entry and
level on one core of the development machine, a third of a ``torch.softmax`` pass over the same entries.
Compiled on first use and cached on disk by numba (a few seconds, once per machine; loading the cached code
takes ~0.3 s per process).

State layout (6, L, q) float64, as ``posterior.PosteriorSums.stack``: shift, z, zh, zg, best, best_row. The
shift is the running largest logit, never below 0 (the empty state's shift; the source row's logit is exactly
0, so the final log-sum-exp is >= 0 and each row of a chunk skipped against this floor carries at most
exp(EXP_MIN - 8) of the final mass). A shard of rows without the source row may therefore skip chunks that the
torch path sums: the two paths' partial states then differ (here z = 0, best_row = -1), their merged states
over all rows agree.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 split in two, so that k * _LN2_HI is exact for |k| < 2^8
_LN2_LO = np.float32(-2.12194440e-4)
# Taylor-like minimax coefficients of (exp(r) - 1 - r) / r^2 on |r| <= ln(2) / 2 (Cephes expf)
_P = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                   1.6666665459e-1, 5.0000001201e-1))  # fmt: skip
# fastmath for the vectorized loops, but for "ninf": a d can overflow to -inf (huge d at tiny s), which the
# logits then floor at LOGIT_MIN; the inputs are never NaN
_FAST = {"nnan", "nsz", "arcp", "contract", "afn", "reassoc"}
LOGIT_MIN = np.float32(-1e30)  # logits are floored here (finite, and far below any weight)


@intrinsic
def _bits_as_f32(typingctx, bits):  # type: ignore[no-untyped-def]
    """The float32 whose bit pattern is the int32 ``bits``."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.int32), codegen


@intrinsic
def _f32_bits(typingctx, x):  # type: ignore[no-untyped-def]
    """The int32 bit pattern of the float32 ``x``."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], context.get_value_type(types.int32))

    return types.int32(types.float32), codegen


@njit(inline="always", nogil=True, cache=True)
def _ordered(bits):  # type: ignore[no-untyped-def]
    """The int32 key of a float32's bits that orders as the floats do (and back: it is its own inverse).
    Integer max reductions vectorize; float ones (NaN semantics) do not."""
    return bits ^ ((bits >> np.int32(31)) & np.int32(0x7FFFFFFF))


@njit(fastmath=_FAST, inline="always", nogil=True, cache=True)
def _exp(x):  # type: ignore[no-untyped-def]
    """exp(x) in fp32 for x in [-87, 0] (the caller clamps); vectorizes."""
    k = np.floor(x * _LOG2E + np.float32(0.5))
    r = x - k * _LN2_HI - k * _LN2_LO
    p = _P[0]
    p = p * r + _P[1]
    p = p * r + _P[2]
    p = p * r + _P[3]
    p = p * r + _P[4]
    p = p * r + _P[5]
    p = p * r * r + r + np.float32(1.0)
    return p * _bits_as_f32((np.int32(k) + np.int32(127)) << np.int32(23))


@njit(fastmath=_FAST, nogil=True, cache=True, boundscheck=False)
def _terms(g0, ge, x0_sq, eps_x0, sq, d, g, h):  # type: ignore[no-untyped-def]
    """One query's (d, g, h) over the chunk from its Gram rows g0 = <x0, y_i>, ge = <eps, y_i>."""
    for j in range(sq.shape[0]):
        hj = x0_sq - g0[j]
        h[j] = hj
        d[j] = max(hj + sq[j] - g0[j], np.float32(0.0))
        g[j] = eps_x0 - ge[j]


@njit(fastmath=_FAST, nogil=True, cache=True, boundscheck=False)
def _logits(d, g, a, b, out):  # type: ignore[no-untyped-def]
    """out = max(a d + b g, LOGIT_MIN) (finite); returns its largest value."""
    key = np.int32(-2147483647)
    for j in range(d.shape[0]):
        v = max(a * d[j] + b * g[j], LOGIT_MIN)
        out[j] = v
        key = max(key, _ordered(_f32_bits(v)))
    return _bits_as_f32(_ordered(key))


@njit(fastmath=_FAST, inline="always", nogil=True, cache=True)
def _weight(x, exp_min):  # type: ignore[no-untyped-def]
    """exp(x) for x <= 0, exactly 0 below ``exp_min`` (a select, so that no fused multiply-add leaves a residue)."""
    e = _exp(max(x, exp_min))
    return e if x >= exp_min else np.float32(0.0)


@njit(fastmath=_FAST, nogil=True, cache=True, boundscheck=False)
def _weight_sums(logit, m, h, g, exp_min):  # type: ignore[no-untyped-def]
    """(z, zh, zg) = the sums of e, e h, e g with e = ``_weight(logit - m)``."""
    z = np.float32(0.0)
    zh = np.float32(0.0)
    zg = np.float32(0.0)
    for j in range(logit.shape[0]):
        e = _weight(logit[j] - m, exp_min)
        z += e
        zh += e * h[j]
        zg += e * g[j]
    return z, zh, zg


@njit(inline="always", nogil=True, cache=True)
def _is_near(d, x0_sq, sq, near_tol):  # type: ignore[no-untyped-def]
    """``posterior.near_pairs``'s rule in fp32: d <= NEAR_TOL (||x0||^2 + ||y||^2) (no fastmath: one rounding)."""
    return d <= near_tol * (x0_sq + sq)


@njit(nogil=True, cache=True, boundscheck=False)
def _count_near(d, x0_sq, sq, near_tol):  # type: ignore[no-untyped-def]
    """How many entries are near (vectorized; the exact pass runs only if any)."""
    count = 0
    for j in range(d.shape[0]):
        count += _is_near(d[j], x0_sq, sq[j], near_tol)
    return count


@njit(nogil=True, cache=True, boundscheck=False)
def _query_terms(i, g0, ge, x0_sq, eps_x0, sq, x0, eps, y, near_tol, d, g, h):  # type: ignore[no-untyped-def]
    """Query i's (d, g, h) over the chunk (``_terms``), the near entries recomputed exactly in float64."""
    _terms(g0[i], ge[i], x0_sq[i], eps_x0[i], sq, d, g, h)
    tol = np.float32(near_tol)
    if _count_near(d, x0_sq[i], sq, tol) == 0:
        return
    for j in range(sq.shape[0]):
        if _is_near(d[j], x0_sq[i], sq[j], tol):
            dd, gg, hh = 0.0, 0.0, 0.0
            for c in range(y.shape[1]):
                xc = np.float64(x0[i, c])
                diff = xc - np.float64(y[j, c])
                dd += diff * diff
                gg += np.float64(eps[i, c]) * diff
                hh += xc * diff
            d[j], g[j], h[j] = dd, gg, hh


_F4, _F4_2 = types.float32[::1], types.float32[:, ::1]
_CHUNK_UPDATE = types.void(_F4_2, _F4_2, _F4, _F4, _F4, _F4_2, _F4_2, _F4_2, _F4, _F4, types.float64[:, :, ::1],
                           types.int64, types.float64, types.float64, types.float64)  # fmt: skip
_MODE_UPDATE = types.void(_F4_2, _F4_2, _F4_2, _F4, _F4, _F4, _F4_2, _F4_2, _F4_2, types.int64[::1], types.int64[::1],
                          _F4, _F4, types.float64[::1], types.float64[::1], types.float64, types.float64)  # fmt: skip


@njit(_CHUNK_UPDATE, nogil=True, cache=True, boundscheck=False)
def chunk_update(g0, ge, x0_sq, eps_x0, sq, x0, eps, y, a, b, state, row_offset, near_tol, exp_min, min_mass):  # type: ignore[no-untyped-def]  # noqa: E501
    """Merge a chunk of rows into ``state`` (6, L, q) float64, in place.

    g0, ge (q, n) fp32: Gram products <x0, y_i>, <eps, y_i>; x0_sq, eps_x0 (q,) and sq (n,) fp32: ||x0||^2,
    <eps, x0>, ||y_i||^2; x0, eps (q, D) and y (n, D) fp32 (for the exact near entries); a, b (L,) fp32;
    row_offset: the global index of y's first row; exp_min (fp32), min_mass: ``EXP_MIN``, ``MODE_MIN_MASS``."""
    q, n = g0.shape
    exp_min = np.float32(exp_min)
    d, g, h, logit = np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32)
    for i in range(q):
        _query_terms(i, g0, ge, x0_sq, eps_x0, sq, x0, eps, y, near_tol, d, g, h)
        for k in range(a.shape[0]):
            m = _logits(d, g, a[k], b[k], logit)
            shift = state[0, k, i]
            located = -1.0
            if m >= shift + exp_min - 8.0:
                z, zh, zg = _weight_sums(logit, m, h, g, exp_min)
                new = max(shift, np.float64(m))
                old_scale, scale = np.exp(shift - new), np.exp(np.float64(m) - new)
                state[0, k, i] = new
                state[1, k, i] = state[1, k, i] * old_scale + np.float64(z) * scale
                state[2, k, i] = state[2, k, i] * old_scale + np.float64(zh) * scale
                state[3, k, i] = state[3, k, i] * old_scale + np.float64(zg) * scale
                if m > state[4, k, i] and 1.0 / z >= min_mass:
                    for j in range(n):
                        if logit[j] == m:
                            located = np.float64(row_offset + j)
                            break
            if m > state[4, k, i]:
                state[4, k, i] = m
                state[5, k, i] = located


@njit(fastmath=_FAST, nogil=True, cache=True, boundscheck=False)
def _mode_weighted(logit, shift, gm, exp_min):  # type: ignore[no-untyped-def]
    """The sum of ``_weight(logit - shift)`` gm, gm = <mode, y_i>."""
    total = np.float32(0.0)
    for j in range(logit.shape[0]):
        total += _weight(logit[j] - shift, exp_min) * gm[j]
    return total


@njit(_MODE_UPDATE, nogil=True, cache=True, boundscheck=False)
def mode_update(g0, ge, gm, x0_sq, eps_x0, sq, x0, eps, y, start, pair_mode, a, b, shift, total, near_tol, exp_min):  # type: ignore[no-untyped-def]  # noqa: E501
    """Add a chunk's share of sum_i exp(delta_i - shift) <mode, y_i> to ``total`` (P,) float64, in place.

    Queries as in ``chunk_update`` (q of them); pairs are sorted by query, query i's being start[i]:start[i + 1];
    gm (M, n) fp32: the Gram products of the distinct mode rows, pair p's being gm[pair_mode[p]]; a, b (P,) fp32
    and shift (P,) float64: the pair's level and final shift."""
    q, n = g0.shape
    exp_min = np.float32(exp_min)
    d, g, h, logit = np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32)
    for i in range(q):
        _query_terms(i, g0, ge, x0_sq, eps_x0, sq, x0, eps, y, near_tol, d, g, h)
        for p in range(start[i], start[i + 1]):
            m = _logits(d, g, a[p], b[p], logit)
            if m >= shift[p] + exp_min - 8.0:
                w = _mode_weighted(logit, np.float32(shift[p]), gm[pair_mode[p]], exp_min)
                total[p] += np.float64(w)
