"""A training objective: the prediction target, the loss weighting and the level density, built from the specs
``diffloss train`` takes (``NAME[:key=value,...]``).

The loss of one sample is w_target(lambda) * (per-dimension MSE of the target prediction), lambda drawn from the
density; its expectation at lambda under the Bayes-optimal model is w_x0(lambda) * J*_x0(lambda) (the target's
loss factor cancels), which is what ``diffloss.optimal.floor`` integrates. The ``optimal`` weighting and density
need the J* table of the training data: read from a ``diffloss optimal-loss --json`` report or computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from diffloss.config import parse_spec
from diffloss.data import Dataset
from diffloss.density import LevelDensity, density_from_spec, get_density
from diffloss.errors import DifflossError
from diffloss.optimal.reference import Table, compute_table, read_table
from diffloss.process import Process
from diffloss.target import Target, get_target
from diffloss.weighting import Weighting, get_weighting


@dataclass(frozen=True)
class Objective:
    """What a training loss is: ``target`` (what the network predicts), ``weighting`` (the weight on the target's
    per-dimension MSE), ``density`` (where levels are drawn). ``jstar`` is the J* table of the data when one was
    read or computed for it (the ``optimal`` weighting or density, or ``--optimal-loss FILE``), else None."""

    target: Target
    weighting: Weighting
    density: LevelDensity
    jstar: Table | None = None

    def to_dict(self) -> dict[str, Any]:
        """The target's name and the weighting and density configs (plain JSON types; the J* table left out)."""
        return {"target": self.target.name, "weighting": self.weighting.to_dict(), "density": self.density.to_dict()}


def build_objective(
    target: str,
    weighting: str | None,
    density: str,
    process: Process,
    data: Dataset,
    *,
    optimal_loss: str | None = None,
    label_dropout: float | None = None,
    progress: bool = False,
) -> Objective:
    """The objective of ``diffloss train``'s options. ``weighting`` None is ``constant:on=TARGET`` (the plain MSE
    of the target); ``density`` ``default`` is the process's usual one. An ``optimal`` weighting or density gets
    the J* table of ``data``: read from ``optimal_loss`` (a ``diffloss optimal-loss --json`` report on the same
    data) or computed by the exact estimator (cached); ``optimal_loss`` given with any other objective is read
    too, so the objective's floor is known. ``label_dropout`` (a class-conditional run: the probability of the
    null label) makes the table the floor of conditional training (``compute_table``); a report file holds only
    the unconditional J*, so the two are refused together."""
    tgt = get_target(target)
    (w_name, w_params), (d_name, d_params) = parse_spec(weighting or f"constant:on={tgt.name}"), parse_spec(density)
    table = None
    if optimal_loss and label_dropout is not None:
        raise DifflossError(
            f"--optimal-loss {optimal_loss} holds the unconditional J*, above the floor of class-conditional "
            "training; leave --optimal-loss out and the conditional floor is computed (and cached)"
        )
    if optimal_loss:
        table = read_table(optimal_loss, data.fingerprint)
    elif "optimal" in (w_name, d_name):
        table = compute_table(data, process, label_dropout=label_dropout, progress=progress)
    params = {} if table is None else {"jstar_logsnr": table[0], "jstar": table[1]}
    w = get_weighting(w_name, **{**w_params, **(params if w_name == "optimal" else {})})
    if d_name == "optimal":
        d = get_density(d_name, **{**d_params, **params})
    else:
        d = density_from_spec(density, process)
    return Objective(tgt, w, d, table)
