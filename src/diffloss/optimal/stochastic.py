"""Stochastic optimal-loss estimators: DOL, cDOL and SNIS (Xu et al., arXiv 2506.13763, §3).

The exact posterior mean over N rows costs O(N·D) per query. These estimators replace it by a posterior over a
random subset S = {source row j} ∪ R, where R holds L−1 other rows drawn uniformly without replacement, and
weight the source row's kernel by 1/C relative to the others:

    m̂(x) = (k_j·y_j / C + Σ_{i∈R} k_i·y_i) / (k_j / C + Σ_{i∈R} k_i),   k_i = exp(−‖x − y_i‖² / (2s²)).

C = 1 is DOL (the source row counts like any other row, so it is over-weighted by about N/L: J* is
underestimated). C = (N−1)/(L−1) makes the normalizer an unbiased importance-sampling estimate of the full one,
C = 4N/L is the paper's recommendation (the default), and C = ∞ drops the source row: self-normalized importance
sampling (SNIS) over the L−1 random rows. At L = N and C = 1 the estimator is the exact one. We could not read
the paper's definition of its coefficient beyond these limits; this parametrization is ours, derived from them.

Conventions (shared with the exact estimator): x = x_t/α = y_j + s·ε, losses are per-dimension means of the x0
error, and the per-query value is the control-variate inner-product form ⟨x0 − c, x0 − m̂⟩ / D with
c = μ + g·(x − μ), g = v / (v + s²) (μ the data mean, v the per-dimension data variance). With the exact
posterior this is unbiased for any c(x) (⟨c, x0 − m⟩ has zero conditional mean); c ≈ E[x0 | x] of a Gaussian
fit keeps its variance low at every s. It needs only inner products of the queries with the subset rows, so
one pair of Gram products serves every level.

Queries are drawn in *draws*: per draw, one uniform random set T of L rows and ``queries_per_draw`` queries
with uniform sources j. Query j uses R = T without j if j ∈ T, else T without its last row; either way R is a
uniform (L−1)-subset of the rows other than j, so every query sees exactly the (x0, R) distribution above, while
the shared T turns the work into one GEMM. At L = N, R is every other row. The standard error treats draws as
independent clusters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from diffloss.errors import DifflossError
from diffloss.optimal.inputs import as_levels, as_rows, class_groups, combine_groups
from diffloss.optimal.posterior import near_pairs
from diffloss.optimal.result import OptimalLossResult

#: draws are the independent units of the standard error: use at least this many (fewer queries per draw if needed)
MIN_DRAWS = 16


def estimator_name(correction: float) -> str:
    """``"dol"`` for C = 1, ``"snis"`` for C = ∞, ``"cdol"`` otherwise."""
    return "dol" if correction == 1 else "snis" if math.isinf(correction) else "cdol"


def default_correction(n: int, subset_size: int) -> float:
    """The paper's recommended coefficient, C = 4N/L."""
    return 4.0 * n / subset_size


def stochastic_optimal_loss(
    x: np.ndarray,
    sigmas: Sequence[float] | np.ndarray,
    *,
    subset_size: int,
    correction: float | None = None,
    queries: int | None,
    queries_per_draw: int = 128,
    seed: int = 0,
    labels: np.ndarray | None = None,
    progress: bool = False,
    device: torch.device | str = "cpu",
) -> OptimalLossResult:
    """J*(s) per dimension at every s in ``sigmas`` from subsets of ``subset_size`` rows (DOL / cDOL / SNIS).

    ``x`` is (N, D) data (any float dtype); ``sigmas`` are noise-to-signal ratios s = σ/α > 0. ``correction`` is
    C (None: 4N/L; ``math.inf``: SNIS). ``queries`` (x0, ε) pairs are used for all levels, in draws of
    ``queries_per_draw`` queries sharing one random subset. With ``labels`` (N,) the subset is drawn within the
    source row's class (the class-conditional optimal loss): each class is estimated on its own with queries
    in proportion to its size (C = None means 4·N_c/L per class), and ``per_class`` holds its curve.

    ``stderr`` is the Monte Carlo standard error over draws (over at least min(queries, 16) draws). ``bias``
    estimates E[estimate] − J*, by extrapolation in the number of other rows h = L−1. The same queries are also
    scored with the consistent coefficient C₁(h') = (N−1)/h' (κ = C·h/(N−1) = 1: the others' weights then
    estimate the full posterior's normalizer without bias, and L = N is exact) on the nested subsets made of the
    first h' = h, ⌊h/2⌋, ⌊h/4⌋ random rows of each draw, giving e₀, e₁, e₂. Modelling e(h') as
    J + B·(h'^(−a) − (N−1)^(−a)) (a power law with the finite-population correction that vanishes at L = N),
    d₁ = e₁ − e₀ and d₂ = e₂ − e₁ give 2^a ≈ d₂/d₁ (Aitken's Δ², a clipped to [0.1, 1]; a = 1, plain
    Richardson, when d₂/d₁ ≤ 1) and the bias of e₀, b₀ = d₁·(h^(−a) − (N−1)^(−a)) / (h₁^(−a) − h^(−a)). The
    reported bias is (estimate − e₀) + b₀: the paired difference to the consistent estimator (which carries the
    part of the bias due to C, e.g. DOL's over-weighted source row) plus the extrapolated bias of the latter.
    On MNIST the bias decays like h^(−0.3), far slower than the 1/h of a textbook ratio estimator, which is why
    a is estimated. The bias costs up to three more softmax passes (h, h/2, h/4 rows) per level, none at L = N.

    ``device``: where the rows live and the products run; the draws (subsets, sources, noise) come from a CPU
    generator either way, so the numbers do not depend on the device beyond rounding.
    """
    x = as_rows(x)
    sig = as_levels(sigmas)
    n = len(x)
    if queries is None or queries < 2:
        raise DifflossError(
            f"the stochastic estimator needs a number of queries >= 2 (a standard error needs two draws), got "
            f"{queries}; give it explicitly (e.g. --queries 2048)"
        )
    if queries_per_draw < 1:
        raise DifflossError(f"queries_per_draw must be >= 1, got {queries_per_draw}")
    if correction is not None and not correction > 0:
        raise DifflossError(f"the correction C must be > 0 (1 = DOL, inf = SNIS), got {correction}")
    groups = class_groups(n, labels)
    smallest = min(len(g) for g in groups.values())
    if not 1 <= subset_size <= smallest:
        where = "the smallest class" if labels is not None else "the data"
        raise DifflossError(
            f"subset size L must be between 1 and {smallest} (the rows of {where}), got {subset_size}; pick a "
            "smaller L or use the exact estimator"
        )
    if subset_size == 1 and correction is not None and math.isinf(correction):
        raise DifflossError("SNIS (C = inf) needs subset size L >= 2: with L = 1 the subset has no other rows")

    gen = torch.Generator().manual_seed(seed)
    curves, errs, biases, meta_c = {}, {}, {}, {}
    for label, rows in groups.items():
        c = default_correction(len(rows), subset_size) if correction is None else float(correction)
        q = max(2, round(queries * len(rows) / n))
        est, se, bias, draws = _estimate(
            x[rows], sig, subset_size, c, q, queries_per_draw, gen, progress, torch.device(device)
        )
        curves[label], errs[label], biases[label] = est, se, bias
        meta_c[label] = {"correction": _json_number(c), "queries": q, "draws": draws}

    x0_mse, stderr = combine_groups(groups, curves, errs)
    bias, _ = combine_groups(groups, biases, biases)
    cs = {float(m["correction"]) for m in meta_c.values()}
    name = estimator_name(cs.pop()) if len(cs) == 1 else "cdol"
    meta = {
        "subset_size": subset_size,
        "correction": _json_number(correction) if correction is not None else "4N/L",
        "queries_per_draw": queries_per_draw,
        "draws": sum(m["draws"] for m in meta_c.values()),
        "seed": seed,
        "bias_method": "aitken-nested-subsets",
    }
    if labels is not None:
        meta["per_class"] = {str(k): v for k, v in meta_c.items()}
    else:
        meta["correction_value"] = meta_c[None]["correction"]
    return OptimalLossResult(
        sigmas=sig,
        x0_mse=x0_mse,
        stderr=stderr,
        n_data=n,
        dim=x.shape[1],
        estimator=name,
        n_queries=sum(m["queries"] for m in meta_c.values()),
        bias=bias,
        per_class=curves if labels is not None else None,
        per_class_stderr=errs if labels is not None else None,
        meta=meta,
    )


def _json_number(c: float) -> float | str:
    return c if math.isfinite(c) else "inf"


# ---- one group ------------------------------------------------------------------------------------------
def _estimate(
    x: np.ndarray,
    sig: np.ndarray,
    subset_size: int,
    c: float,
    queries: int | None,
    queries_per_draw: int,
    gen: torch.Generator,
    progress: bool,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(estimate, stderr, bias, draws) over one group of rows, each estimate an array over levels."""
    n, d = x.shape
    rows = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    yc, norms, var = _center(rows)
    h = subset_size - 1
    # the requested C, and the consistent C = (N−1)/h' on nested subsets h' = h, h/2, h/4 for the bias (at L = N
    # the consistent estimator is exact: nothing to extrapolate); stages are (rows drawn, C), duplicates dropped
    nested = [h, h // 2, h // 4] if h < n - 1 else [h]
    consistent = [(k + 1, (n - 1) / max(k, 1)) for k in nested]
    stages = list(dict.fromkeys([(subset_size, c), *consistent]))
    b = min(queries_per_draw, max(1, queries // MIN_DRAWS))  # at least min(queries, MIN_DRAWS) draws
    sizes = [b] * (queries // b) + ([queries % b] if queries % b else [])
    s = torch.from_numpy(sig).to(device)
    g = var / (var + s**2)

    sums = torch.zeros(len(sizes), len(stages), len(sig), dtype=torch.float64, device=device)  # per draw and stage
    for k, size in enumerate(tqdm(sizes, desc="draws", disable=not progress, leave=False)):
        perm = torch.randperm(n, generator=gen)
        sub = perm[:subset_size]
        src = torch.randint(n, (size,), generator=gen)
        eps = torch.randn(size, d, generator=gen, dtype=torch.float32)
        pos = torch.empty(n, dtype=torch.long).scatter_(0, perm, torch.arange(n))[src]  # source's place in perm
        perm, sub, src, eps, pos = (t.to(device) for t in (perm, sub, src, eps, pos))
        dist, proj = _pair_terms(rows, yc, norms, src, sub, eps)
        base = norms[src, None] - norms[sub][None, :]  # ‖y_j‖² − ‖y_i‖², centered
        for which, (m, cc) in enumerate(stages):
            drop = torch.where(pos < m, pos, m - 1)
            sums[k, which] = _query_values(dist[:, :m], proj[:, :m], base[:, :m], drop, s, g, cc).sum(0) / d
    counts = torch.tensor(sizes, dtype=torch.float64, device=device)[:, None]
    est = dict(zip(stages, sums.sum(0) / queries))
    e = torch.stack([est[st] for st in consistent])
    bias = est[stages[0]] - e[0] + (_extrapolated_bias(e, nested, n) if len(nested) == 3 else 0.0)
    main = est[stages[0]]
    stderr = _cluster_stderr(sums[:, 0], counts, main, queries)
    return main.cpu().numpy(), stderr.cpu().numpy(), bias.cpu().numpy(), len(sizes)


def _extrapolated_bias(est: torch.Tensor, others: list[int], n: int) -> torch.Tensor:
    """Bias of est[0] from nested estimates est[k] with others[k] rows and C = (N−1)/others[k] (see the
    docstring of ``stochastic_optimal_loss``)."""
    h0, h1, h2 = others
    if h1 == 0:
        return torch.zeros_like(est[0])
    d1 = est[1] - est[0]
    ratio = (est[2] - est[1]) / torch.where(d1 == 0, 1.0, d1)
    a = torch.where((ratio > 1) & (h2 > 0), torch.log2(ratio.clamp_min(1.0)), 1.0).clamp(0.1, 1.0)
    return d1 * (h0**-a - (n - 1) ** -a) / (h1**-a - h0**-a)


def _center(rows):
    """(centered float32 rows, their float64 squared norms, per-dimension variance); float64 arithmetic."""
    x64 = rows.double()
    mu = x64.mean(0)
    yc = (x64 - mu).float()
    norms = (yc.double() ** 2).sum(1)
    return yc, norms, float(norms.mean()) / rows.shape[1]


def _pair_terms(rows, yc, norms, src, others, eps):
    """(‖y_j − y_i‖², ⟨ε, y_j − y_i⟩) for every query j and subset row i, as (B, L) float64.

    Both come from float32 Gram products; near pairs (``diffloss.optimal.posterior.near_pairs``: duplicates and
    near-duplicates, where the expanded distance cancels) are recomputed in float64 from the row differences.
    """
    ys, yo = yc[src], yc[others]
    gram = (torch.cat([ys, eps]) @ yo.T).double()
    dist = (norms[src, None] + norms[others][None, :] - 2 * gram[: len(src)]).clamp_min(0)
    proj = (eps.double() * ys.double()).sum(1, keepdim=True) - gram[len(src) :]
    qi, oi = near_pairs(dist, norms[src], norms[others])
    if len(qi):
        diff = rows[src[qi]].double() - rows[others[oi]].double()
        dist[qi, oi] = (diff**2).sum(1)
        proj[qi, oi] = (eps[qi].double() * diff).sum(1)
    return dist, proj


def _query_values(dist, proj, base, drop, s, g, c):
    """⟨x0 − c(x), x0 − m̂(x)⟩ per query and level, (B, K), over a drawn set of L rows of which column
    ``drop[b]`` is left out (the source itself if drawn, else one random row), leaving L−1 others.

    The source row has log-weight −log C, row i −‖y_j − y_i‖²/(2s²) − ⟨ε, y_j − y_i⟩/s (the common −‖ε‖²/2
    cancels); the source contributes 0 to x0 − m̂. On centered rows x0 − c = (1 − g)·y_j − g·s·ε and
    ⟨y_j, y_j − y_i⟩ = (‖y_j − y_i‖² + ‖y_j‖² − ‖y_i‖²) / 2. Float64 throughout."""
    out = torch.zeros(dist.shape[0], len(s), dtype=torch.float64)
    if dist.shape[1] == 1:
        return out  # no other rows: m̂ is the source row
    dropped = torch.zeros_like(dist, dtype=torch.bool).scatter_(1, drop[:, None], True)
    # the two inner products each level needs, as a (B, L, 2) batch for one bmm: ⟨y_j, y_j − y_i⟩, ⟨ε, y_j − y_i⟩
    terms = torch.stack([0.5 * (dist + base), proj], 2)
    src_logit = -math.log(c)
    for k, (sk, gk) in enumerate(zip(s.tolist(), g.tolist())):
        logits = (dist * (-0.5 / (sk * sk))).sub_(proj, alpha=1 / sk).masked_fill_(dropped, -math.inf)
        top = logits.amax(1, keepdim=True).clamp_min_(src_logit)
        w = logits.sub_(top).exp_()
        z = w.sum(1) + torch.exp(src_logit - top[:, 0])
        both = torch.bmm(w[:, None, :], terms)[:, 0]  # (B, 2)
        out[:, k] = ((1 - gk) * both[:, 0] - gk * sk * both[:, 1]) / z
    return out


def _cluster_stderr(draw_sums, counts, est, queries):
    """Standard error of the query mean when queries within a draw share a subset (draws = clusters)."""
    g = len(draw_sums)
    resid = draw_sums - counts * est
    return (resid**2).sum(0).sqrt() / queries * math.sqrt(g / (g - 1))
