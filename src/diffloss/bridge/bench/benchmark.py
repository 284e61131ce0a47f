"""One benchmark invocation, as ``diffloss bridge bench`` runs it: train the pending cells of a grid under a preset
(or only report), then write the report (``diffloss.bridge.bench.report``) with the command that reproduces it."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffloss.bridge.bench.grid import check_root_preset, finished_rows, get_preset, make_grid
from diffloss.bridge.bench.report import report_paths, write_report
from diffloss.bridge.bench.run import run_grid
from diffloss.bridge.train import check_device

REPORT_NAME = "bridge_benchmark.md"  # the report's default name, in the root of the runs


@dataclass(frozen=True)
class BenchmarkResult:
    """How far a benchmark got: ``cells`` in the grid, ``finished`` runs (diverged ones included), the keys of the
    cells whose training ``failed`` in this invocation, and the ``report`` files written."""

    cells: int
    finished: int
    failed: list[str]
    report: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"cells": self.cells, "finished": self.finished, "failed": self.failed, "report": self.report}


def run_benchmark(
    preset_name: str,
    targets: Sequence[str],
    samplers: Sequence[str],
    losses: Sequence[str],
    out: str,
    *,
    seeds: Sequence[int] | None = None,
    report: str | None = None,
    report_only: bool = False,
    quiet: bool = False,
    device: str = "cpu",
) -> BenchmarkResult:
    """Train every pending cell of targets x samplers x losses x seeds under ``out`` with the budgets of preset
    ``preset_name`` (``report_only``: train nothing), then write the report to ``report`` (default
    ``out/bridge_benchmark.md``). ``seeds`` default to the preset's. Bad names, a bad report path or a root holding
    another preset's runs fail before any training."""
    preset = get_preset(preset_name)
    seeds = list(seeds) if seeds is not None else list(preset.seeds)
    cells = make_grid(targets, samplers, losses, seeds)
    report = report or str(Path(out) / REPORT_NAME)
    report_paths(report)  # a bad path fails now, not after the runs
    if report_only:
        check_root_preset(out, preset, record=False)
        failed = []
    else:
        failed = run_grid(cells, preset, out, quiet=quiet, device=check_device(device))
    command = shlex.join(
        ["diffloss", "bridge", "bench", "--preset", preset.name, "--targets", ",".join(targets)]
        + ["--samplers", ",".join(samplers), "--losses", ",".join(losses), "--seeds", ",".join(map(str, seeds))]
        + ["--out", out, "--report", report]
    )
    rows = finished_rows(cells, out)
    paths = write_report(rows, preset, report, expected=cells, command=command)
    finished = sum(1 for r in rows if r.get("error") is None)
    return BenchmarkResult(len(cells), finished, [c.key for c in failed], list(map(str, paths)))
