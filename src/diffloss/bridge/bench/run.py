"""Running the benchmark grid: every pending cell trained by the same function as ``diffloss bridge train``.

Each cell is trained in its run directory with ``train_bridge(..., resume=True)``, so an interrupted cell continues
from its last checkpoint and finished cells (with ``metrics.json``) are skipped. A cell whose training raises
(anything but bad input) gets ``failed.json`` with the error and the grid goes on; the next run tries it again. CPU and
wall seconds of every finished cell are appended to ``<root>/timing.jsonl``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from diffloss.bridge.bench.grid import FAILED_FILE, Budget, Cell, Preset, check_root_preset, pending, run_dir
from diffloss.bridge.config import BridgeConfig, make_config
from diffloss.bridge.train import train_bridge
from diffloss.errors import DifflossError
from diffloss.io import write_json_atomic

TIMING_FILE = "timing.jsonl"
TRAINER = {"optimizer": "radam", "grad_clip": 1.0, "lr_schedule": "cosine"}  # what bridge.train implements


def cell_config(cell: Cell, budget: Budget) -> BridgeConfig:
    """The ``diffloss bridge train`` configuration of one cell: evaluated once, at the end, on ``eval_samples``."""
    trainer = {k: getattr(budget, k) for k in TRAINER}
    if trainer != TRAINER:
        raise DifflossError(f"bridge training implements {TRAINER}; the budget asks for {trainer}")
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


def run_cell(cell: Cell, budget: Budget, root: str | Path, device: str = "cpu") -> dict | None:
    """Train one cell into its run directory; return its metrics, or None after recording a failure."""
    out = run_dir(root, cell)
    cfg = cell_config(cell, budget)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        metrics = train_bridge(cfg, out, resume=True, quiet=True, device=device)
    except DifflossError:
        raise
    except Exception as e:  # a failed cell is reported, not fatal to the grid
        write_json_atomic(out / FAILED_FILE, {"error": f"{type(e).__name__}: {e}".splitlines()[0]})
        return None
    (out / FAILED_FILE).unlink(missing_ok=True)
    timing = {"cell": cell.key, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    with open(Path(root) / TIMING_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(timing) + "\n")
    return metrics


def run_grid(
    cells: Sequence[Cell], preset: Preset, root: str | Path, *, quiet: bool = False, device: str = "cpu"
) -> list[Cell]:
    """Train every cell of ``cells`` without a ``metrics.json`` under ``root``; return the failed cells.

    Targets go in the order of ``cells``; within a target seed 0 of every (sampler, loss) runs before seed 1, so a
    partial run already fills the whole table of its first targets."""
    for cell in cells:  # every configuration is checked before the first run starts
        cell_config(cell, preset.budget_for(cell.target))
    check_root_preset(root, preset)
    targets = list(dict.fromkeys(c.target for c in cells))
    todo = sorted(pending(cells, root), key=lambda c: (targets.index(c.target), c.seed))
    failed = []
    bar = tqdm(todo, disable=quiet, file=sys.stderr, desc="bench", unit="cell")
    for cell in bar:
        bar.set_postfix_str(cell.key)
        if run_cell(cell, preset.budget_for(cell.target), root, device) is None:
            failed.append(cell)
    bar.close()
    return failed
