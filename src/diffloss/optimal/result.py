"""The one result type every optimal-loss estimator returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffloss.process import Process
from diffloss.target import Target


@dataclass
class OptimalLossResult:
    """J*(s) at noise-to-signal ratios ``sigmas``, as per-dimension x0 MSE, with its standard error.

    ``x0_mse[i]`` estimates E||x0 - E[x0 | x_t]||^2 / D at s = sigmas[i] over the empirical data
    distribution; ``stderr[i]`` is its Monte Carlo standard error. ``upper95`` (optional, exact estimator) is an
    approximate 95% upper bound on J* at the levels where the estimate is exactly 0 +- 0 (the rare-event regime;
    NaN elsewhere; see ``diffloss.optimal.exact.rare_event_bound``). ``bias`` (optional) is an estimate of the
    estimator's bias at each level (stochastic estimators), ``per_class`` (optional) maps a class label to its
    own (L,) curve for the conditional optimal loss (``per_class_stderr``: their stderrs), ``meta`` holds
    estimator settings and ``data`` describes the data set (name, fingerprint, per-dimension variance), both
    plain JSON types. ``to_json`` is the report that ``diffloss optimal-loss --json`` writes.
    """

    sigmas: np.ndarray
    x0_mse: np.ndarray
    stderr: np.ndarray
    n_data: int
    dim: int
    estimator: str
    n_queries: int
    upper95: np.ndarray | None = None
    bias: np.ndarray | None = None
    per_class: dict[int, np.ndarray] | None = None
    per_class_stderr: dict[int, np.ndarray] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

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
            "upper95": None if self.upper95 is None else [_finite_or_none(v) for v in self.upper95],
            "bias": arr(self.bias),
            "per_class": per(self.per_class),
            "per_class_stderr": per(self.per_class_stderr),
            "meta": self.meta,
            "data": self.data,
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
            upper95=None
            if d.get("upper95") is None
            else np.asarray([math.nan if v is None else v for v in d["upper95"]], dtype=np.float64),
            bias=arr(d.get("bias")),
            per_class=per(d.get("per_class")),
            per_class_stderr=per(d.get("per_class_stderr")),
            meta=dict(d.get("meta", {})),
            data=dict(d.get("data", {})),
        )

    def to_json(self, process: Process, target: Target, objective: dict[str, Any] | None = None) -> dict[str, Any]:
        """The report of ``diffloss optimal-loss --json`` (the contract in docs/design.md, "CLI contracts").

        Per level: ``sigma`` (s), ``logsnr``, ``t`` (the process time, null for a level the process never
        reaches: J* is defined at every s > 0, the process only maps times to levels), ``x0_mse`` and its
        ``stderr``, ``loss`` and ``loss_stderr`` in ``target`` units, and ``upper95`` (null unless the level is
        in the rare-event regime). ``objective`` (``ObjectiveFloor.to_dict()``) is added when given."""
        loss, loss_se = self.in_target(process, target)
        lo, hi = process.logsnr_range()
        lam = self.logsnr
        inside = (lam >= lo - 1e-9 * max(1.0, abs(lo))) & (lam <= hi + 1e-9 * max(1.0, abs(hi)))
        t = np.full(len(lam), math.nan)
        if inside.any():
            t[inside] = process.t_of_logsnr(np.clip(lam[inside], lo, hi)).numpy()
        upper = self.upper95 if self.upper95 is not None else np.full(len(lam), math.nan)
        levels = [
            {
                "sigma": float(self.sigmas[i]),
                "logsnr": float(lam[i]),
                "t": _finite_or_none(t[i]),
                "x0_mse": float(self.x0_mse[i]),
                "loss": float(loss[i]),
                "stderr": float(self.stderr[i]),
                "loss_stderr": float(loss_se[i]),
                "upper95": _finite_or_none(upper[i]),
            }
            for i in range(len(self.sigmas))
        ]
        out: dict[str, Any] = {
            "n_data": self.n_data,
            "dim": self.dim,
            "process": process.name,
            "target": target.name,
            "estimator": self.estimator,
            "units": "per-dimension mean",
            "levels": levels,
            "data": self.data,
            "queries": self.n_queries,
            "seed": self.meta.get("seed"),
            "process_config": process.to_dict(),
            "meta": self.meta,
        }
        if self.bias is not None:
            out["bias"] = self.bias.tolist()
        if self.per_class is not None:
            f = self.loss_factor(process, target)
            out["per_class"] = {}
            for c, curve in self.per_class.items():
                entry = {"x0_mse": curve.tolist(), "loss": (curve * f).tolist()}
                if self.per_class_stderr is not None:
                    entry["stderr"] = self.per_class_stderr[c].tolist()
                out["per_class"][str(c)] = entry
        if objective is not None:
            out["objective"] = objective
        return out


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None
