"""Diagnosis: a model's denoising loss per noise level against the optimal loss J*, on the same draws.

For each level s = sigma / alpha and each query (x0 a data row, eps ~ N(0, I)) the model sees
x_t = alpha * x0 + sigma * eps and predicts its target; from that prediction follows an x0 prediction x_hat.
The optimal x0-predictor is the posterior mean m(x_t / alpha) over all N rows (``posterior_mean``, float64).
Every quantity below is a per-dimension mean (over the D entries of a sample), averaged over Q queries that
are *the same* at every level and for model and optimum (common random numbers):

- J_theta = E||x_hat - x0||^2 / D (x0 units) and E||y_hat - y||^2 / D (target units, from the raw prediction);
- J*      = E||m - x0||^2 / D, times the target's ``loss_factor`` in target units;
- gap     = J_theta - J*, estimated by E||x_hat - m||^2 / D. Since E[x0 - m | x_t] = 0, the per-query paired
  difference ||x_hat - x0||^2 - ||m - x0||^2 equals ||x_hat - m||^2 plus a zero-mean cross term
  2 <x0 - m, m - x_hat> uncorrelated with it; dropping that term leaves an unbiased, non-negative estimator
  with strictly smaller variance. It relies on m being the posterior of the very data the queries come from,
  which holds here by construction;
- ratio   = gap / J_theta, the fraction of the model's loss that is reducible (the same in both units).

The *paired* difference is kept as a check: any function of x_t has J_theta >= J* in expectation, so a
paired difference below 0 by more than ``BELOW_Z`` standard errors (in x0 or in target units) means the
comparison is broken (a unit or convention bug, or a "model" that sees more than x_t); it is flagged.

Conditional diagnosis (``labels``): a class-conditional model is told each query's class, and the optimum is
the *conditional* posterior mean, over the rows of the query's class only; J* is then the conditional optimal
loss (classes weighted by frequency, since source rows are drawn uniformly from all rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from diffloss.device import World
from diffloss.errors import DifflossError
from diffloss.levels import Levels, model_condition
from diffloss.optimal.exact import QUERY_BLOCK, centered_rows, mean_and_stderr, query_block
from diffloss.optimal.inputs import class_groups
from diffloss.optimal.posterior import Rows, posterior_mean
from diffloss.shards import gather_rows, rank_rows

if TYPE_CHECKING:
    from diffloss.loader import DiffusionModel

BELOW_Z = 4.0  # standard errors below J* at which a level is flagged (about 3e-5 false alarms per level)
RATIO_FLOOR = 1e-9  # J_theta below this times its largest value is rounding noise: gap ratio reported as 0


@dataclass
class Diagnosis:
    """Per-level results, each an (L,) float64 array; ``*_se`` are standard errors over the queries.

    ``model_x0`` / ``optimal_x0`` / ``gap_x0`` / ``paired_x0`` are in x0 units, ``model_target`` /
    ``optimal_target`` / ``gap_target`` / ``paired_target`` in the units of the model's target (``factor``
    converts x0 units to target units per level). ``below_optimal`` flags levels where the model's loss is
    below J* beyond noise (see the module docstring)."""

    levels: Levels
    factor: np.ndarray
    model_x0: np.ndarray
    model_x0_se: np.ndarray
    optimal_x0: np.ndarray
    optimal_x0_se: np.ndarray
    gap_x0: np.ndarray
    gap_x0_se: np.ndarray
    paired_x0: np.ndarray
    paired_x0_se: np.ndarray
    model_target: np.ndarray
    model_target_se: np.ndarray
    paired_target: np.ndarray
    paired_target_se: np.ndarray
    n_queries: int
    conditional: bool = False

    @property
    def sigmas(self) -> np.ndarray:
        return self.levels.nsr.numpy()

    @property
    def optimal_target(self) -> np.ndarray:
        return self.optimal_x0 * self.factor

    @property
    def gap_target(self) -> np.ndarray:
        return self.gap_x0 * self.factor

    @property
    def ratio(self) -> np.ndarray:
        """(J_theta - J*) / J_theta per level; 0 where J_theta is at floating-point noise level (below
        ``RATIO_FLOOR`` times its largest value over the levels), where the ratio means nothing."""
        ok = self.model_x0 > RATIO_FLOOR * self.model_x0.max(initial=0.0)
        return np.divide(self.gap_x0, self.model_x0, out=np.zeros_like(self.gap_x0), where=ok)

    @property
    def below_optimal(self) -> np.ndarray:
        def below(diff, se, ref):
            return diff < -(BELOW_Z * se + 1e-9 * np.abs(ref))

        return below(self.paired_x0, self.paired_x0_se, self.optimal_x0) | below(
            self.paired_target, self.paired_target_se, self.optimal_target
        )

    def summary(self) -> str:
        """One line: where the model is furthest from optimal (largest gap ratio) and by how much."""
        r, s = self.ratio, self.sigmas
        k, j, c = int(np.argmax(r)), int(np.argmax(self.gap_x0)), int(np.argmin(r))
        return (
            f"furthest from optimal at s = {s[k]:.4g} (logSNR {self.levels.logsnr[k].item():.3g}): "
            f"(J - J*)/J = {r[k]:.3f}, J_x0 = {self.model_x0[k]:.4g} vs J*_x0 = {self.optimal_x0[k]:.4g}; "
            f"largest x0 gap {self.gap_x0[j]:.4g} at s = {s[j]:.4g}; closest at s = {s[c]:.4g} (ratio {r[c]:.3f}); "
            f"gap ratio >= 0.5 at {int((r >= 0.5).sum())} of {len(r)} levels"
        )

    def warning(self) -> str | None:
        """The text of the below-J* warning, or None when no level is flagged."""
        bad = np.flatnonzero(self.below_optimal)
        if not len(bad):
            return None
        where = ", ".join(f"{self.sigmas[i]:.4g}" for i in bad)
        return (
            f"the model's loss is below the optimal loss J* beyond noise at s = {where}: no function of x_t can "
            "do that, so the comparison is broken (wrong target, process, data scaling or timestep convention, "
            "or a model that sees more than x_t)"
        )

    def to_rows(self) -> list[dict[str, Any]]:
        """One plain dict per level (the JSON ``levels`` entries)."""
        cols = {
            "sigma": self.sigmas,
            "logsnr": self.levels.logsnr.numpy(),
            "t": self.levels.t.numpy(),
            "model_x0_mse": self.model_x0,
            "model_x0_stderr": self.model_x0_se,
            "optimal_x0_mse": self.optimal_x0,
            "optimal_x0_stderr": self.optimal_x0_se,
            "gap_x0": self.gap_x0,
            "gap_x0_stderr": self.gap_x0_se,
            "paired_gap_x0": self.paired_x0,
            "paired_gap_x0_stderr": self.paired_x0_se,
            "loss_factor": self.factor,
            "model_loss": self.model_target,
            "model_loss_stderr": self.model_target_se,
            "optimal_loss": self.optimal_target,
            "optimal_loss_stderr": self.optimal_x0_se * self.factor,
            "gap_loss": self.gap_target,
            "gap_loss_stderr": self.gap_x0_se * self.factor,
            "paired_gap_loss": self.paired_target,
            "paired_gap_loss_stderr": self.paired_target_se,
            "gap_ratio": self.ratio,
        }
        rows = [{k: float(v[i]) for k, v in cols.items()} for i in range(len(self.sigmas))]
        for i, row in enumerate(rows):
            if self.levels.timestep is not None:
                row["timestep"] = int(self.levels.timestep[i])
            row["below_optimal"] = bool(self.below_optimal[i])
        return rows


def _predict(
    model: DiffusionModel, x0: torch.Tensor, eps: torch.Tensor, y: torch.Tensor | None, levels: Levels, k: int,
    batch: int,
):  # fmt: skip
    """The model's prediction (q, D) float64 at level k, its (alpha, sigma) and x_t (float32 input, as float64), all
    on the device of ``x0`` (the model's); a conditional model gets the class labels ``y`` (q,) of the queries, on
    the host like the level condition."""
    a, s = (v[k].item() for v in model.process.alpha_sigma(levels.t))  # host levels: no wait for the device
    x_t = (a * x0 + s * eps).float()
    one = Levels(
        levels.t[k : k + 1], levels.logsnr[k : k + 1], None if levels.timestep is None else levels.timestep[k : k + 1]
    )
    out = []
    with torch.no_grad():
        for lo in range(0, len(x_t), batch):
            xb = x_t[lo : lo + batch].reshape(-1, *model.shape)
            c = model_condition(one, model.process, model.cond, xb, host=True).expand(xb.shape[0])
            pred = model.network(xb, c) if y is None else model.network(xb, c, y[lo : lo + batch])
            out.append(pred.reshape(xb.shape[0], -1).double())
    return torch.cat(out), a, s, x_t.double()


def class_posterior_mean(
    x0: torch.Tensor, eps: torch.Tensor, groups: dict, y: np.ndarray | None, sigmas: np.ndarray, chunk_rows: int
) -> torch.Tensor:
    """``posterior_mean`` (L, q, D) of queries (x0, eps) over the rows of their class: ``groups`` maps a class
    to its ``Rows`` and ``y`` (q,) gives the queries' classes; without labels (``y`` None) ``groups[None]`` holds
    all rows."""
    if y is None:
        return posterior_mean(x0, eps, groups[None], sigmas, chunk_rows=chunk_rows)
    out = torch.empty(len(sigmas), *x0.shape, dtype=torch.float64)
    for c in np.unique(y):
        sel = torch.from_numpy(y == c)
        out[:, sel] = posterior_mean(x0[sel], eps[sel], groups[int(c)], sigmas, chunk_rows=chunk_rows)
    return out


def _block_terms(
    model: DiffusionModel, x0: torch.Tensor, eps: torch.Tensor, y: np.ndarray | None, mc: torch.Tensor,
    mean: torch.Tensor, x0c: torch.Tensor, levels: Levels, batch: int,
) -> torch.Tensor:  # fmt: skip
    """Per-query terms (4, L, q) float64 on the model's device: ||x_hat-x0||^2, ||m-x0||^2, ||x_hat-m||^2,
    ||y_hat-y||^2 (sums over D).

    ``x0`` are the data rows as the model sees them, ``x0c`` the same rows centered (fp32, as the posterior's
    centered data; ``mean`` is the float64 row mean), ``eps`` the fp32 noise, ``y`` the queries' classes (None:
    unconditional), ``mc`` (L, q, D) the host's centered posterior means of the queries (``class_posterior_mean``:
    m = mc + mean), sent to the device without waiting; nothing here waits for the device."""
    dev = model.device
    to_dev = lambda v: v.to(dev, non_blocking=True)  # noqa: E731
    sig = levels.nsr.numpy()
    mc = to_dev(mc)
    labels = None if y is None else torch.from_numpy(y)  # host labels: the network moves them (DiffusionModel)
    x0, e64, x0c, mean = (to_dev(v.double()) for v in (x0, eps, x0c, mean))
    sq = lambda v: v.pow(2).sum(1)  # noqa: E731
    out = []
    for k in range(len(sig)):
        pred, a, s, x_t = _predict(model, x0, e64, labels, levels, k, batch)
        x_hat = model.target.to_x0_eps(pred, x_t, a, s)[0]  # host floats a, s: no host-to-device copy
        y_k = model.target.value(x0, e64, a, s)
        out.append(torch.stack([sq(x_hat - x0), sq(mc[k] - x0c), sq(x_hat - mean - mc[k]), sq(pred - y_k)]))
    return torch.stack(out, 1)


def diagnose(
    model: DiffusionModel,
    x: np.ndarray,
    levels: Levels,
    *,
    queries: int = 1024,
    seed: int = 0,
    batch: int = 256,
    chunk_rows: int = 4096,
    progress: bool = False,
    labels: np.ndarray | None = None,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    compile: bool = False,
    world: World | None = None,
    posterior: dict | None = None,
) -> Diagnosis:
    """Diagnose ``model`` (a ``diffloss.loader.DiffusionModel``) on data ``x`` (N, D) at ``levels``; ``x`` is in
    the model's units (e.g. images in [-1, 1]).

    ``queries`` (x0, eps) draws, the same at every level: source rows uniformly with replacement and fp32
    noise, from ``numpy.random.default_rng([seed, block])`` in blocks of 256: the draws of
    ``exact_optimal_loss`` with the same seed and ``queries`` (J* here is their direct form ||m - x0||^2).
    ``batch`` bounds the model's batch size, ``chunk_rows`` the posterior's row chunk. ``labels`` (N,) class
    labels of ``x`` make it conditional (see the module docstring): the model, which must be class-conditional,
    gets each query's label and the optimum is the posterior mean within that class. The model runs on ``device``
    (default: where it is) under ``precision``, compiled with ``compile`` (``DiffusionModel.for_inference``); the
    draws and the posterior means stay on the host (float64), the per-query terms are computed on the device and
    fetched once at the end. ``world``: a torchrun group (every rank calls this); each rank takes a contiguous share
    of the query blocks (``rank_rows``) and every rank returns the whole diagnosis, the single-process one.
    ``posterior``: a dict that keeps the posterior means of the draws (keyed by seed, query block and levels) to
    reuse them when several models are diagnosed on the same draws; it belongs to one ``x`` (and ``labels``): the
    posterior, the costly part of a diagnosis (N x D per query and level), is then computed once."""
    x = np.asarray(x)
    n, dim = x.shape
    if dim != math.prod(model.shape):
        raise DifflossError(
            f"the data has {dim} values per sample but the model takes shape {model.shape} "
            f"({math.prod(model.shape)} values); give data of the model's shape"
        )
    if queries < 2:
        raise DifflossError(f"queries must be >= 2 (a standard error needs two), got {queries}")
    if labels is not None and not model.num_classes:
        raise DifflossError("conditional diagnosis needs a class-conditional model; this one is unconditional")
    model = model.for_inference(device, precision, compile)
    rows = centered_rows(x)
    mean = torch.from_numpy(np.asarray(x, dtype=np.float64).mean(0))
    groups = {c: Rows.of(rows[idx]) for c, idx in class_groups(n, labels).items()}
    world = world or World()
    blocks = rank_rows(math.ceil(queries / QUERY_BLOCK), world)
    parts = [torch.zeros((4, len(levels.t), 0), dtype=torch.float64, device=model.device)]  # a rank may get none
    mine = sum(min(QUERY_BLOCK, queries - b * QUERY_BLOCK) for b in blocks)
    with tqdm(total=mine, unit="query", desc="diagnose", disable=not progress, leave=False) as bar:
        for block in blocks:
            size = min(QUERY_BLOCK, queries - block * QUERY_BLOCK)
            idx, eps = query_block(n, dim, [seed], block, size, None)
            i = torch.from_numpy(idx)
            x0 = torch.from_numpy(x[idx])
            y = None if labels is None else np.asarray(labels, dtype=np.int64)[idx]
            e = torch.from_numpy(eps)
            key = (seed, block, size, labels is None, levels.nsr.numpy().tobytes())
            mc = None if posterior is None else posterior.get(key)
            if mc is None:
                mc = class_posterior_mean(rows[i], e, groups, y, levels.nsr.numpy(), chunk_rows)
                if posterior is not None:
                    posterior[key] = mc
            parts.append(_block_terms(model, x0, e, y, mc, mean, rows[i], levels, batch))
            bar.update(size)
    terms = gather_rows(torch.cat(parts, 2).permute(2, 0, 1).contiguous(), world).permute(1, 2, 0)  # queries last
    model_sq, opt_sq, gap_sq, target_sq = terms.cpu().numpy() / dim
    a, s = model.process.alpha_sigma(levels.t)
    factor = model.target.loss_factor(a, s).numpy().astype(np.float64)
    stats = [mean_and_stderr(v) for v in (model_sq, opt_sq, gap_sq, model_sq - opt_sq, target_sq)]
    paired_target = mean_and_stderr(target_sq - factor[:, None] * opt_sq)
    return Diagnosis(
        levels,
        factor,
        *[v for pair in stats for v in pair],
        *paired_target,
        n_queries=queries,
        conditional=labels is not None,
    )
