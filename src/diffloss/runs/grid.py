"""A resumable grid of runs keyed by their settings.

A cell is any description of one run (typically a frozen dataclass of its settings); ``key(cell)`` maps it to a
stable directory relative to the grid's root (``cell_key`` formats one from the settings), so rerunning the same
command finds the same directories. ``finished(cell, directory)`` says whether a cell's work is complete: those
cells are skipped, the others are run again and are expected to resume from what their directory already holds
(a checkpoint, finished evaluation files). Each run holds the directory's lock (``diffloss.runs.lock``: two
processes may share one grid) and is timed into ``timing`` (``diffloss.runs.timing``, one line per finished run).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Generic, Literal, TypeVar

from diffloss.errors import DifflossError
from diffloss.io import write_json_atomic
from diffloss.runs.lock import CellLocked, cell_lock
from diffloss.runs.script import log
from diffloss.runs.timing import TIMING_FILE, timed

C = TypeVar("C")
FAILED_FILE = "failed.json"
Outcome = Literal["done", "failed", "held"]


def cell_key(settings: Mapping[str, Any], layout: str) -> str:
    """The relative directory of a cell: ``layout`` (a ``str.format`` template, "/" between levels) filled with
    ``settings``, e.g. ``cell_key({"target": "seeds", "seed": 0}, "{target}/seed{seed}") == "seeds/seed0"``."""
    key = layout.format_map(settings)
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or ".." in parts or any(not p.strip() for p in key.split("/")):
        raise DifflossError(f"settings {dict(settings)} give {key!r}, not a relative directory name")
    return key


@dataclass(frozen=True)
class Grid(Generic[C]):
    """Cells under ``root``: cell ``c`` lives in ``root / key(c)`` and is complete when ``finished(c, directory)``.
    ``timing`` is the JSONL of the runs' seconds (default ``root/timing.jsonl``)."""

    root: Path
    key: Callable[[C], str]
    finished: Callable[[C, Path], bool]
    timing: Path | None = None

    def directory(self, cell: C) -> Path:
        return Path(self.root) / self.key(cell)

    def pending(self, cells: Iterable[C]) -> list[C]:
        """The cells that are not finished, in the order given."""
        return [c for c in cells if not self.finished(c, self.directory(c))]

    def run_cell(self, cell: C, work: Callable[[C, Path], Any], *, keep_going: bool = False) -> Outcome:
        """``work(cell, directory)`` under the directory's lock, timed, unless the cell is finished (another process
        may have finished it since ``pending`` was asked); ``"held"`` (and nothing done) when another live process
        holds the lock. With ``keep_going`` an exception other than a ``DifflossError`` (bad input: always raised) is
        written to ``directory/failed.json`` as ``{"error": its first line}`` and gives ``"failed"``; a later
        success removes that file. Without it the exception propagates."""
        directory = self.directory(cell)
        key = self.key(cell)
        try:
            with cell_lock(directory):
                if not self.finished(cell, directory):
                    with timed(self.timing or Path(self.root) / TIMING_FILE, key):
                        work(cell, directory)
        except CellLocked as e:
            log(f"{key}: {e}; skipped")
            return "held"
        except DifflossError:
            raise
        except Exception as e:
            if not keep_going:
                raise
            error = f"{type(e).__name__}: {e}".splitlines()[0]
            write_json_atomic(directory / FAILED_FILE, {"error": error})
            log(f"{key}: failed ({error})")
            return "failed"
        (directory / FAILED_FILE).unlink(missing_ok=True)
        return "done"

    def run(self, cells: Iterable[C], work: Callable[[C, Path], Any], *, keep_going: bool = False) -> list[C]:
        """``run_cell`` on every pending cell in the order given; returns the cells that failed."""
        return [c for c in self.pending(cells) if self.run_cell(c, work, keep_going=keep_going) == "failed"]
