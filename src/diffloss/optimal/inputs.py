"""Input checks and class bookkeeping shared by every optimal-loss estimator.

Data are (N, D) rows, levels are noise-to-signal ratios s = sigma / alpha > 0, labels are N integers. Without
labels there is one group, keyed ``None``; with labels one group per class, keyed by the class label. A curve
over groups is combined by class frequency (the conditional optimal loss is the frequency-weighted mean of the
per-class ones), and independent per-class standard errors add in quadrature.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from diffloss.errors import DifflossError

Groups = dict[int | None, np.ndarray]
LEVEL_RANGE = (1e-100, 1e100)  # noise-to-signal ratios s whose s^2 and 1 / s^2 float64 holds with room to spare


def as_rows(x, chunk_rows: int = 65536):
    """``x`` as a non-empty, finite (N, D) floating array (integers become float64); a one-line error otherwise.

    Host data (arrays, CPU tensors) become a numpy array; a tensor on a GPU, or in a dtype numpy lacks (bf16),
    stays as it is stored (checked ``chunk_rows`` rows at a time), for estimators that compute where and as the
    data are stored."""
    if hasattr(x, "detach") and (x.device.type != "cpu" or x.dtype == torch.bfloat16):
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1 or not x.is_floating_point():
            raise DifflossError(f"data must be a non-empty (N, D) floating tensor, got {x.dtype} {tuple(x.shape)}")
        if not all(bool(x[lo : lo + chunk_rows].isfinite().all()) for lo in range(0, len(x), chunk_rows)):
            raise DifflossError("data contains NaN or inf; remove or impute those rows")
        return x
    x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise DifflossError(f"data must be a non-empty (N, D) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise DifflossError("data contains NaN or inf; remove or impute those rows")
    return x


def as_levels(sigmas: Sequence[float] | np.ndarray) -> np.ndarray:
    """Noise-to-signal ratios as a non-empty float64 (L,) array of finite values > 0."""
    s = np.atleast_1d(np.asarray(sigmas, dtype=np.float64))
    if s.ndim != 1 or len(s) == 0 or not (np.isfinite(s) & (s > 0)).all():
        raise DifflossError(f"noise-to-signal ratios s must be finite and > 0, got {np.asarray(sigmas).tolist()}")
    bad = s[(s < LEVEL_RANGE[0]) | (s > LEVEL_RANGE[1])]
    if len(bad):
        raise DifflossError(
            f"noise-to-signal ratio s = {bad[0]:g} is too extreme for float64 arithmetic on s^2; give "
            f"{LEVEL_RANGE[0]:g} <= s <= {LEVEL_RANGE[1]:g} (|log-SNR| <= {-2 * math.log(LEVEL_RANGE[0]):.0f})"
        )
    return s


def check_options(queries: int | None, rel_stderr: float) -> None:
    """Raise ``DifflossError`` for an unusable query count or relative stderr."""
    if queries is not None and queries < 2:
        raise DifflossError(f"queries must be >= 2 (a standard error needs two), got {queries}")
    if not rel_stderr > 0:
        raise DifflossError(f"rel_stderr must be > 0, got {rel_stderr}")


def class_groups(n: int, labels: np.ndarray | None) -> Groups:
    """Row indices per group: ``{None: all rows}`` without labels, ``{label: rows}`` with (N,) integer labels."""
    if labels is None:
        return {None: np.arange(n)}
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise DifflossError(f"labels must have one entry per data row ({n}), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not (np.isfinite(labels).all() and np.array_equal(labels, np.round(labels))):
            raise DifflossError("labels must be integers (one class id per row)")
        labels = labels.astype(np.int64)
    return {int(k): np.flatnonzero(labels == k) for k in np.unique(labels)}


def combine_groups(groups: Groups, curves: Mapping, errors: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(curve, stderr) over all rows from per-group curves: weights = group sizes / N, stderrs in quadrature."""
    n = sum(len(rows) for rows in groups.values())
    share = {k: len(rows) / n for k, rows in groups.items()}
    curve = sum(share[k] * np.asarray(curves[k]) for k in groups)
    stderr = np.sqrt(sum((share[k] * np.asarray(errors[k])) ** 2 for k in groups))
    return curve, stderr
