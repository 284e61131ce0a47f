"""The bridge-sampler benchmark: grid and budget presets (``grid``), reference values (``reference``), and the
report writer (``report``). Training the cells is the job of the bridge training loop."""

from diffloss.bridge.bench.grid import (
    DEFAULT_LOSSES,
    DEFAULT_TARGETS,
    PRESETS,
    Budget,
    Cell,
    Preset,
    finished_rows,
    get_preset,
    make_grid,
    pending,
    run_dir,
)
from diffloss.bridge.bench.reference import LOG_Z, PUBLISHED, Reference
from diffloss.bridge.bench.report import CellSummary, summarize, to_csv, to_markdown, write_report

__all__ = [
    "DEFAULT_TARGETS",
    "DEFAULT_LOSSES",
    "LOG_Z",
    "PRESETS",
    "PUBLISHED",
    "Budget",
    "Cell",
    "CellSummary",
    "Preset",
    "Reference",
    "finished_rows",
    "get_preset",
    "make_grid",
    "pending",
    "run_dir",
    "summarize",
    "to_csv",
    "to_markdown",
    "write_report",
]
