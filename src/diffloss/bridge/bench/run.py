"""Running the benchmark grid: every pending cell trained by the same function as ``diffloss bridge train``.

The grid is a ``diffloss.runs.Grid``: each cell is trained in its run directory (under its lock) with
``train_bridge(..., resume=True)``, so an interrupted cell continues from its last checkpoint and finished cells (with
``metrics.json``) are skipped. A cell whose training raises (anything but bad input) gets ``failed.json`` with the
error and the grid goes on; the next run tries it again. CPU and wall seconds of every finished cell are appended to
``<root>/timing.jsonl``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from diffloss.bridge.bench.grid import Cell, Preset, bench_grid, check_root_preset
from diffloss.bridge.config import BridgeConfig, make_config
from diffloss.bridge.presets import preset_options
from diffloss.bridge.train import train_bridge
from diffloss.errors import DifflossError

TRAINER = {"optimizer": "radam", "grad_clip": 1.0, "lr_schedule": "cosine"}  # what bridge.train implements


def cell_config(cell: Cell, preset: Preset) -> BridgeConfig:
    """The ``diffloss bridge train`` configuration of one cell, evaluated on ``eval_samples`` trajectories.

    A preset with ``reference_table`` takes each cell's configuration from the reference's best runs
    (``diffloss.bridge.presets.preset_options`` of the preset's name: evaluated periodically, the best ELBO kept),
    the others from the budget (evaluated once, at the end)."""
    budget = preset.budget_for(cell.target)
    trainer = {k: getattr(budget, k) for k in TRAINER}
    if trainer != TRAINER:
        raise DifflossError(f"bridge training implements {TRAINER}; the budget asks for {trainer}")
    if preset.reference_table:
        options = preset_options(preset.name, cell.target, cell.sampler, cell.loss)
        return make_config(
            cell.target, cell.sampler, loss=cell.loss, seed=cell.seed, eval_n=budget.eval_samples, **options
        )
    return make_config(
        cell.target,
        cell.sampler,
        steps=budget.steps,
        loss=cell.loss,
        iters=budget.iterations,
        batch=budget.batch,
        seed=cell.seed,
        lr=budget.learning_rate,
        eval_every=0,
        eval_n=budget.eval_samples,
    )


def run_grid(
    cells: Sequence[Cell], preset: Preset, root: str | Path, *, quiet: bool = False, device: str = "cpu"
) -> list[Cell]:
    """Train every cell of ``cells`` without a ``metrics.json`` under ``root``; return the failed cells.

    Targets go in the order of ``cells``; within a target seed 0 of every (sampler, loss) runs before seed 1, so a
    partial run already fills the whole table of its first targets."""
    for cell in cells:  # every configuration is checked before the first run starts
        cell_config(cell, preset)
    check_root_preset(root, preset)
    grid = bench_grid(root)
    targets = list(dict.fromkeys(c.target for c in cells))
    todo = sorted(grid.pending(cells), key=lambda c: (targets.index(c.target), c.seed))

    def work(cell: Cell, out: Path) -> None:
        train_bridge(cell_config(cell, preset), out, resume=True, quiet=True, device=device)

    failed = []
    bar = tqdm(todo, disable=quiet, file=sys.stderr, desc="bench", unit="cell")
    for cell in bar:
        bar.set_postfix_str(cell.key)
        if grid.run_cell(cell, work, keep_going=True) == "failed":
            failed.append(cell)
    bar.close()
    return failed
