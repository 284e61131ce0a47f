"""The benchmark grid (targets × samplers × losses × seeds), its budget presets, and where each run lives.

A run is one ``Cell``; its results are ``<root>/<target>/<sampler>/<loss>/seed<k>/metrics.json`` (the file that
``diffloss bridge train --out DIR`` writes), so a benchmark is resumable: cells whose metrics.json exists are done.
A cell whose training raised an error has ``failed.json`` (``{"error": ...}``) instead and is tried again on the next
run. ``<root>/preset.json`` records the budget the root was run with.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any

from diffloss.bridge.presets import MEDIUM
from diffloss.bridge.samplers import BRIDGE_SAMPLERS
from diffloss.bridge.targets import SAMPLING_TARGETS
from diffloss.errors import DifflossError, unknown_name
from diffloss.io import write_json_atomic
from diffloss.runs import FAILED_FILE, Grid, cell_key, collect

DEFAULT_LOSSES = ("rkl-r", "lv", "rkl-ld")
DEFAULT_TARGETS = ("seeds", "sonar", "german_credit", "brownian", "lgcp")
METRICS_FILE = "metrics.json"
PRESET_FILE = "preset.json"


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
        return cell_key(asdict(self), "{target}/{sampler}/{loss}/seed{seed}")


def _check_names(kind: str, names: Sequence[str], known: Iterable[str]) -> None:
    known = tuple(known)
    if not names:
        raise DifflossError(f"the benchmark grid needs at least one {kind}")
    for name in names:
        if name not in known:
            raise unknown_name(kind, name, known)


def make_grid(
    targets: Sequence[str] = DEFAULT_TARGETS,
    samplers: Sequence[str] = BRIDGE_SAMPLERS,
    losses: Sequence[str] = DEFAULT_LOSSES,
    seeds: Sequence[int] = (0, 1, 2),
) -> list[Cell]:
    """All cells, target-major (targets, then samplers, losses, seeds), after checking every name."""
    _check_names("sampling target", targets, SAMPLING_TARGETS)
    _check_names("sampler", samplers, BRIDGE_SAMPLERS)
    _check_names("bridge loss", losses, DEFAULT_LOSSES)
    if not seeds:
        raise DifflossError("the benchmark grid needs at least one seed")
    return [Cell(*c) for c in product(targets, samplers, losses, seeds)]


def bench_grid(root: str | Path) -> Grid[Cell]:
    """The cells' run directories under ``root``; a cell is finished when its ``metrics.json`` exists."""
    return Grid(Path(root), key=lambda c: c.key, finished=lambda c, d: (d / METRICS_FILE).is_file())


def run_dir(root: str | Path, cell: Cell) -> Path:
    return bench_grid(root).directory(cell)


def pending(cells: Iterable[Cell], root: str | Path) -> list[Cell]:
    """The cells without a finished run (no ``metrics.json`` in their run directory) under ``root``."""
    return bench_grid(root).pending(cells)


def finished_rows(cells: Iterable[Cell], root: str | Path) -> list[dict[str, Any]]:
    """The metrics of every finished cell under ``root``, each extended with its target, sampler, loss and seed
    (the rows that ``report.summarize`` takes); a failed cell gives its ``{"error": ...}`` row instead. Cells not run
    yet are skipped."""
    files = []
    for cell in cells:
        done = run_dir(root, cell) / METRICS_FILE
        files.append((done if done.is_file() else run_dir(root, cell) / FAILED_FILE, asdict(cell)))
    return collect(files)


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
    """A named budget for the whole grid, with per-target overrides of Budget fields and the seeds to run.

    With ``reference_table`` each cell's batch, K, iterations, learning rate and initialisation come from the
    reference's best runs (``diffloss.bridge.presets``); the budget then gives only the evaluation size."""

    name: str
    description: str
    budget: Budget
    seeds: tuple[int, ...] = (0, 1, 2)
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reference_table: bool = False

    def budget_for(self, target: str) -> Budget:
        return replace(self.budget, **self.overrides.get(target, {}))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seeds": list(self.seeds), "overrides": {k: dict(v) for k, v in self.overrides.items()}}

    def budgets(self) -> dict[str, Any]:
        """What fixes the runs' results (the default budget and the per-target overrides), as JSON."""
        d = self.to_dict()
        return {"name": self.name, "budget": d["budget"], "overrides": d["overrides"]}


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        description=(
            "the reference configuration of [BRIDGE] (Sanokowski et al. 2025) per (target, sampler, loss), from "
            "dds_optim's Configs/Sweeps/BestRunsSweeps (diffloss.bridge.presets): 40k iterations, batch 2000 "
            "(LGCP 300), K=128, RAdam, per-cell lr with cosine decay to lr/10, clipping 1, prior std and diffusion "
            "at the reference's initialisation, score gate on, rKL-R with the diffusion frozen; CMCD and DBS with "
            "rkl-ld, lv, rkl-r only. For a GPU machine (--device cuda)."
        ),
        budget=Budget(iterations=40_000, batch=2000, steps=128, learning_rate=5e-3, eval_samples=2000),
        overrides={"lgcp": {"batch": 300}},
        reference_table=True,
    ),
    "medium": Preset(
        name="medium",
        description=(
            f"the paper preset (diffloss.bridge.presets) with {MEDIUM['iters'][0]} iterations instead of 40k, "
            f"evaluated every {MEDIUM['eval_every'][0]} (best ELBO kept), and nothing else changed: batch 2000 "
            "(LGCP 300), K=128, per-cell lr (cosine to lr/10 over the shorter run), three optimizer chains, prior std "
            "and diffusion at the reference's initialisation, score gate, rKL-R with the diffusion frozen. About "
            "4-7 CPU minutes per Seeds run on one thread of this machine."
        ),
        budget=Budget(iterations=MEDIUM["iters"][0], batch=2000, steps=128, learning_rate=5e-3, eval_samples=2000),
        overrides={"lgcp": {"batch": 300}},
        reference_table=True,
    ),
    "small": Preset(
        name="small",
        description=(
            "a budget for a 2-core CPU machine: 2000 iterations, batch 64, K=32, RAdam, lr 0.005, clipping 1, cosine "
            "decay, metrics on 2000 samples; LGCP 1000 iterations of batch 16. Measured cost (the cells finished on "
            "a 2-core AMD EPYC machine, one thread per process): 1100-1500 CPU s per target and seed, 5.88 CPU "
            "hours for the whole 5 × 3 × 3 × 3 grid, i.e. about 3 h on 2 free cores (two processes with disjoint "
            "--targets). 20x fewer iterations, 31x smaller batches (LGCP 19x) and 4x fewer "
            "steps than the paper (so, where a target suggests no CMCD Langevin step, a 4x larger step "
            "sigma^2/(2K) at the initial sigma 1; German Credit's CMCD keeps its step 5e-5): expect ELBOs below the "
            "published ones and more divergences."
        ),
        budget=Budget(iterations=2000, batch=64, steps=32, learning_rate=5e-3, eval_samples=2000),
        overrides={"lgcp": {"iterations": 1000, "batch": 16}},
    ),
    "smoke": Preset(
        name="smoke",
        description="a check of the pipeline, not a benchmark: 2 iterations, batch 4, K=4, metrics on 8 samples.",
        budget=Budget(iterations=2, batch=4, steps=4, learning_rate=5e-3, eval_samples=8),
        seeds=(0,),
    ),
}


def check_root_preset(root: str | Path, preset: Preset, *, record: bool = True) -> None:
    """Check that the runs under ``root`` used the budgets of ``preset`` (finished cells of another budget must not
    be mixed into one report), from ``<root>/preset.json``; with ``record``, a root without that file gets it."""
    path = Path(root) / PRESET_FILE
    if not path.is_file():
        if not record:
            raise DifflossError(f"{root} holds no benchmark runs (no {PRESET_FILE}); run the benchmark first")
        write_json_atomic(path, preset.budgets())
        return
    recorded = json.loads(path.read_text())
    if recorded != json.loads(json.dumps(preset.budgets())):
        raise DifflossError(
            f"{root} holds runs of preset {recorded.get('name')!r} with other budgets than preset {preset.name!r}; "
            "give another --out directory or that preset"
        )


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise unknown_name("benchmark preset", name, PRESETS)
    return PRESETS[name]
