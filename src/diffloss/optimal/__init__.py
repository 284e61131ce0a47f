"""The optimal loss: J*(s) = E||x0 - E[x0 | x_t]||^2 / D of a finite data set, the floor of every denoising loss.

Entry points:

- ``optimal_loss(data, sigmas, ...) -> OptimalLossResult``: J* at any noise-to-signal ratios s > 0, by the exact
  estimator (``exact``: full posterior, GEMM-bound; sharded by ``sharded``) or the stochastic ones
  (``stochastic``: DOL / cDOL / SNIS), cached (``cache``); ``result.to_json(process, target)`` is the report of
  ``diffloss optimal-loss --json`` and ``result.in_target`` converts to any target's units;
- ``objective_floor(objective, process, jstar)`` (``floor``): the floor of a whole training objective;
- ``reference``: the J* table the optimal weighting and density take; ``report``: the CSV and table text.

The posterior sums all estimators share live in ``posterior``, their input checks in ``inputs``.
"""

from diffloss.optimal.estimate import ESTIMATORS, optimal_loss
from diffloss.optimal.floor import ObjectiveFloor, data_jstar, objective_floor, table_jstar
from diffloss.optimal.result import OptimalLossResult

__all__ = [
    "ESTIMATORS",
    "ObjectiveFloor",
    "OptimalLossResult",
    "data_jstar",
    "objective_floor",
    "optimal_loss",
    "table_jstar",
]
