"""The one result type every optimal-loss estimator returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffloss.process import Process
from diffloss.target import Target


@dataclass
class OptimalLossResult:
    """J*(s) at noise-to-signal ratios ``sigmas``, as per-dimension x0 MSE, with its standard error.

    ``x0_mse[i]`` estimates E||x0 - E[x0 | x_t]||^2 / D at s = sigmas[i] over the empirical data
    distribution; ``stderr[i]`` is its Monte Carlo standard error. ``bias`` (optional) is an estimate of the
    estimator's bias at each level (stochastic estimators), ``per_class`` (optional) maps a class label to its
    own (L,) curve for the conditional optimal loss (``per_class_stderr`` its stderr), ``meta`` holds estimator settings (plain JSON types).
    """

    sigmas: np.ndarray
    x0_mse: np.ndarray
    stderr: np.ndarray
    n_data: int
    dim: int
    estimator: str
    n_queries: int
    bias: np.ndarray | None = None
    per_class: dict[int, np.ndarray] | None = None
    per_class_stderr: dict[int, np.ndarray] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def logsnr(self) -> np.ndarray:
        return -2.0 * np.log(self.sigmas)

    def loss_factor(self, process: Process, target: Target) -> np.ndarray:
        """Per-level factor turning x0 MSE into ``target`` MSE under ``process`` (at the same s)."""
        a, s = process.alpha_sigma_of_logsnr(self.logsnr)
        return target.loss_factor(a, s).numpy()

    def in_target(self, process: Process, target: Target) -> tuple[np.ndarray, np.ndarray]:
        """(loss, stderr) in the units of ``target`` under ``process``."""
        f = self.loss_factor(process, target)
        return self.x0_mse * f, self.stderr * f
