"""The J* table the optimal weighting and density need: read from a ``diffloss optimal-loss --json`` file or
computed once.

A table is ``(logsnr, x0_mse)``: increasing log-SNRs and J* there as per-dimension x0 MSE, the form the
``optimal`` weighting and density take as parameters (``jstar_logsnr``, ``jstar``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from diffloss.data import Dataset
from diffloss.errors import DifflossError
from diffloss.levels import log_spaced
from diffloss.optimal.estimate import optimal_loss
from diffloss.optimal.result import OptimalLossResult
from diffloss.process import Process

Table = tuple[list[float], list[float]]
DEFAULT_LEVELS = 32


def table_of(result: OptimalLossResult) -> Table:
    """The (logsnr, x0_mse) table of a result, sorted by log-SNR."""
    order = np.argsort(result.logsnr)
    return result.logsnr[order].tolist(), result.x0_mse[order].tolist()


def read_table(path: str | Path, fingerprint: str) -> Table:
    """The table in a ``diffloss optimal-loss --json`` report, refused unless it was computed on the data with
    ``fingerprint``."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        levels, made_on = doc["levels"], doc["data"]["fingerprint"]
        pairs = sorted((float(v["logsnr"]), float(v["x0_mse"])) for v in levels)
    except FileNotFoundError:
        raise DifflossError(
            f"--optimal-loss {path}: no such file; write it with `diffloss optimal-loss --json`"
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise DifflossError(
            f"--optimal-loss {path}: not a `diffloss optimal-loss --json` report (needs levels[].logsnr, "
            "levels[].x0_mse and data.fingerprint)"
        ) from None
    if doc.get("meta", {}).get("conditional"):
        raise DifflossError(
            f"--optimal-loss {path} holds the class-conditional J*; the optimal weighting and the loss floor need the "
            "unconditional one: recompute it without --conditional/--labels"
        )
    if made_on != fingerprint:
        raise DifflossError(
            f"--optimal-loss {path} was computed on other data (fingerprint {made_on[:12]}..., this data "
            f"{fingerprint[:12]}...); recompute it with `diffloss optimal-loss --data ...` on the training data"
        )
    return [p[0] for p in pairs], [p[1] for p in pairs]


def compute_table(
    data: Dataset,
    process: Process,
    levels: int = DEFAULT_LEVELS,
    *,
    label_dropout: float | None = None,
    progress: bool = False,
) -> Table:
    """J* of ``data`` at those of ``levels`` log-spaced noise-to-signal ratios over [0.002, 80] that ``process``
    reaches, by ``optimal_loss`` with its default settings and its cache (so ``diffloss optimal-loss --levels K``
    on the same data and levels reuses the result, and vice versa).

    ``label_dropout`` p: the floor of a class-conditional run that replaces each label by the null label with
    probability p. A sample keeps its class with probability 1 - p (its best prediction is the posterior mean
    within the class) or loses it (the posterior over all rows), so the floor per level is
    (1 - p) J*_conditional + p J*_unconditional; both are computed (and cached)."""
    if label_dropout is not None and not 0 <= label_dropout < 1:
        raise DifflossError(f"--label-dropout must be in [0, 1), got {label_dropout}")
    lo, hi = process.logsnr_range()
    s = np.asarray([v for v in log_spaced(levels) if lo <= -2 * np.log(v) <= hi])
    if len(s) < 2:
        raise DifflossError(f"process {process.name!r} reaches fewer than 2 of the default J* levels")
    result = optimal_loss(data, s, progress=progress)
    if label_dropout is None:
        return table_of(result)
    conditional = optimal_loss(data, s, conditional=True, progress=progress)
    mixed = (1 - label_dropout) * conditional.x0_mse + label_dropout * result.x0_mse
    mixed = np.maximum(mixed, 0.0)  # the estimator's -1e-9 rounding where J* underflows
    order = np.argsort(result.logsnr)
    return result.logsnr[order].tolist(), mixed[order].tolist()
