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
    own (L,) curve for the conditional optimal loss (``per_class_stderr``: their stderrs), ``meta`` holds
    estimator settings (plain JSON types).
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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (the inverse of ``from_dict``); class labels become string keys."""

        def arr(a: np.ndarray | None) -> list[float] | None:
            return None if a is None else np.asarray(a, dtype=np.float64).tolist()

        def per(d: dict[int, np.ndarray] | None) -> dict[str, list[float]] | None:
            return None if d is None else {str(k): arr(v) for k, v in d.items()}

        return {
            "sigmas": arr(self.sigmas),
            "x0_mse": arr(self.x0_mse),
            "stderr": arr(self.stderr),
            "n_data": self.n_data,
            "dim": self.dim,
            "estimator": self.estimator,
            "n_queries": self.n_queries,
            "bias": arr(self.bias),
            "per_class": per(self.per_class),
            "per_class_stderr": per(self.per_class_stderr),
            "meta": self.meta,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> OptimalLossResult:
        def arr(a: list[float] | None) -> np.ndarray | None:
            return None if a is None else np.asarray(a, dtype=np.float64)

        def per(p: dict[str, list[float]] | None) -> dict[int, np.ndarray] | None:
            return None if p is None else {int(k): np.asarray(v, dtype=np.float64) for k, v in p.items()}

        return OptimalLossResult(
            sigmas=arr(d["sigmas"]),
            x0_mse=arr(d["x0_mse"]),
            stderr=arr(d["stderr"]),
            n_data=int(d["n_data"]),
            dim=int(d["dim"]),
            estimator=d["estimator"],
            n_queries=int(d["n_queries"]),
            bias=arr(d.get("bias")),
            per_class=per(d.get("per_class")),
            per_class_stderr=per(d.get("per_class_stderr")),
            meta=dict(d.get("meta", {})),
        )
