"""The benchmark grid (targets × samplers × losses × seeds), its budget presets, and where each run lives.

A run is one ``Cell``; its results are ``<root>/<target>/<sampler>/<loss>/seed<k>/metrics.json`` (the file that
``diffloss bridge train --out DIR`` writes), so a benchmark is resumable: cells whose metrics.json exists are done.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any

from diffloss.bridge.targets import TARGETS
from diffloss.errors import DifflossError, unknown_name

SAMPLERS = ("dis", "dbs", "cmcd")
LOSSES = ("rkl-r", "lv", "rkl-ld")
DEFAULT_TARGETS = ("seeds", "sonar", "german_credit", "brownian", "lgcp")
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    target: str
    sampler: str
    loss: str
    seed: int

    @property
    def key(self) -> str:
        """Relative run directory, e.g. ``seeds/cmcd/rkl-ld/seed0``."""
        return f"{self.target}/{self.sampler}/{self.loss}/seed{self.seed}"


def _check_names(kind: str, names: Sequence[str], known: Iterable[str]) -> None:
    known = tuple(known)
    if not names:
        raise DifflossError(f"the benchmark grid needs at least one {kind}")
    for name in names:
        if name not in known:
            raise unknown_name(kind, name, known)


def make_grid(
    targets: Sequence[str] = DEFAULT_TARGETS,
    samplers: Sequence[str] = SAMPLERS,
    losses: Sequence[str] = LOSSES,
    seeds: Sequence[int] = (0, 1, 2),
) -> list[Cell]:
    """All cells, target-major (targets, then samplers, losses, seeds), after checking every name."""
    _check_names("sampling target", targets, TARGETS)
    _check_names("sampler", samplers, SAMPLERS)
    _check_names("bridge loss", losses, LOSSES)
    if not seeds:
        raise DifflossError("the benchmark grid needs at least one seed")
    return [Cell(*c) for c in product(targets, samplers, losses, seeds)]


def run_dir(root: str | Path, cell: Cell) -> Path:
    return Path(root) / cell.key


def pending(cells: Iterable[Cell], root: str | Path) -> list[Cell]:
    """The cells without a finished run (no ``metrics.json`` in their run directory) under ``root``."""
    return [c for c in cells if not (run_dir(root, c) / METRICS_FILE).is_file()]


def finished_rows(cells: Iterable[Cell], root: str | Path) -> list[dict[str, Any]]:
    """The metrics of every finished cell under ``root``, each extended with its target, sampler, loss and seed
    (the rows that ``report.summarize`` takes). Unfinished cells are skipped."""
    rows = []
    for cell in cells:
        path = run_dir(root, cell) / METRICS_FILE
        if path.is_file():
            try:
                metrics = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise DifflossError(f"{path} is not valid JSON ({e}); delete it to rerun that cell") from None
            rows.append({**metrics, **asdict(cell)})
    return rows


@dataclass(frozen=True)
class Budget:
    """Training budget of one run: ``iterations`` optimizer steps on ``batch`` trajectories of ``steps``
    Euler–Maruyama steps; ``optimizer`` with peak ``learning_rate``, gradient-norm clipping at ``grad_clip``, and
    ``lr_schedule`` decay over the iterations; final metrics on ``eval_samples`` fresh trajectories."""

    iterations: int
    batch: int
    steps: int
    learning_rate: float
    eval_samples: int
    optimizer: str = "radam"
    grad_clip: float = 1.0
    lr_schedule: str = "cosine"


@dataclass(frozen=True)
class Preset:
    """A named budget for the whole grid, with per-target overrides of Budget fields and the seeds to run."""

    name: str
    description: str
    budget: Budget
    seeds: tuple[int, ...] = (0, 1, 2)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def budget_for(self, target: str) -> Budget:
        return replace(self.budget, **self.overrides.get(target, {}))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seeds": list(self.seeds), "overrides": {k: dict(v) for k, v in self.overrides.items()}}


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        description=(
            "the published budget of [BRIDGE] (Sanokowski et al. 2025): 40k iterations, batch 2000, K=128, RAdam, "
            "lr 0.005, gradient clipping 1, cosine decay; LGCP with batch 300 as in its config (dds_optim "
            "Configs/LGCP.md). For a GPU machine."
        ),
        budget=Budget(iterations=40_000, batch=2000, steps=128, learning_rate=5e-3, eval_samples=2000),
        overrides={"lgcp": {"batch": 300}},
    ),
    "small": Preset(
        name="small",
        description=(
            "a budget for a 2-core CPU machine: 500 iterations, batch 64, K=32, RAdam, lr 0.005, clipping 1, cosine "
            "decay; LGCP 150 iterations of batch 16 (its 1600-d gradient costs ~15 ms per batch of 64 on one core, "
            "and every Euler step needs one). About 80x fewer iterations, 30x smaller batches and 4x fewer steps "
            "than the paper: expect ELBOs below the published ones."
        ),
        budget=Budget(iterations=500, batch=64, steps=32, learning_rate=5e-3, eval_samples=512),
        overrides={"lgcp": {"iterations": 150, "batch": 16}},
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise unknown_name("benchmark preset", name, PRESETS)
    return PRESETS[name]
