"""The experiment harness: what every experiment script and the bridge benchmark share, so that each keeps only
its science.

- ``grid``: a resumable grid of runs keyed by their settings (``Grid``, ``cell_key``);
- ``lock``: one process per run directory (``cell_lock``: an flock the OS drops when its process dies);
- ``timing``: wall and CPU seconds per run, appended to a JSONL (``timed``, ``read_timing``), and
  seconds per call of a function (``per_call``);
- ``stats``: mean ± std over seeds with one convention for a single seed (``Stat``, ``mean_std``, ``compare``);
- ``records``: the JSON results of finished runs (``read_json``, ``collect``);
- ``report``: markdown (hand-written reading kept), CSV and JSON, all atomic (``write_report``, ``keep_notes``);
- ``pyplot`` and ``save_figure`` (from ``diffloss.figures``, which the library uses too): pyplot on Agg, an
  atomic save;
- ``training``: a ``diffloss train`` run trained in stages (``train_to``, ``checkpoint_step``);
- ``script``: ``log``, ``run_cli``, the options every script has (``experiment_parser``,
  ``parse_experiment_args``, ``report_path``) and
  ``parse_seeds``.
"""

from diffloss.figures import pyplot, save_figure
from diffloss.runs.grid import FAILED_FILE, Grid, cell_key
from diffloss.runs.lock import CellLocked, cell_lock
from diffloss.runs.records import collect, read_json
from diffloss.runs.report import (
    DATA_TEXT,
    NOTES_BEGIN,
    NOTES_END,
    csv_text,
    json_ready,
    keep_notes,
    report_status,
    write_report,
)
from diffloss.runs.script import experiment_parser, log, parse_experiment_args, parse_seeds, report_path, run_cli
from diffloss.runs.stats import Stat, compare, mean_std
from diffloss.runs.timing import TIMING_FILE, per_call, read_timing, timed
from diffloss.runs.training import checkpoint_step, train_to

__all__ = [
    "FAILED_FILE",
    "DATA_TEXT",
    "NOTES_BEGIN",
    "NOTES_END",
    "TIMING_FILE",
    "CellLocked",
    "Grid",
    "Stat",
    "cell_key",
    "cell_lock",
    "checkpoint_step",
    "collect",
    "compare",
    "csv_text",
    "experiment_parser",
    "json_ready",
    "keep_notes",
    "log",
    "mean_std",
    "parse_experiment_args",
    "parse_seeds",
    "pyplot",
    "read_json",
    "per_call",
    "read_timing",
    "report_status",
    "report_path",
    "run_cli",
    "save_figure",
    "timed",
    "train_to",
    "write_report",
]
