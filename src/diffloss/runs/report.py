"""Writing a report: markdown with its hand-written reading kept, CSV and JSON beside it, each file atomic.

A report's hand-written reading lives between the markers ``NOTES_BEGIN`` and ``NOTES_END``; a generator puts
``keep_notes(path)`` where the reading belongs, so regenerating the tables never loses it (a new report gets an
empty block to fill in). Every file is written by ``diffloss.io.atomic_write``: whole or not at all.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diffloss.io import write_json_atomic, write_text_atomic

NOTES_BEGIN, NOTES_END = "<!-- NOTES_BEGIN -->", "<!-- NOTES_END -->"


SMOKE = "**SMOKE RUN — proves the pipeline works end to end; these numbers are not results.**"

DATA_TEXT = {
    "mnist14": "MNIST's 50,000 training images 2x2 mean-pooled to 14x14, D = 196, scaled to [-1, 1]",
    "mnist": "MNIST's 50,000 training images, 28x28, D = 784, scaled to [-1, 1]",
    "digits": "sklearn 8x8 digits, N = 1797, D = 64, scaled to [-1, 1]",
}
"""How a report describes the built-in data sets the experiments train on."""


def report_status(preset: str, partial: str | None = None) -> str:
    """A report's opening warnings: a smoke preset's numbers are not results (``SMOKE``); ``partial``, what has
    finished when not everything has, as a bold PARTIAL line. "" when neither applies."""
    parts = ([SMOKE] if preset.startswith("smoke") else []) + ([f"**PARTIAL: {partial}.**"] if partial else [])
    return "\n\n".join(parts)


def keep_notes(report: str | os.PathLike) -> str:
    """The hand-written notes block of an existing report (markers included), or an empty block."""
    report = Path(report)
    text = report.read_text(encoding="utf-8") if report.exists() else ""
    m = re.search(re.escape(NOTES_BEGIN) + ".*?" + re.escape(NOTES_END), text, flags=re.S)
    return m.group(0) if m else f"{NOTES_BEGIN}\n{NOTES_END}"


def csv_text(columns: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> str:
    """A header line of ``columns`` and one line per row (a sequence, or a mapping read at ``columns``: missing
    keys and None give empty fields)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([row.get(c) for c in columns] if isinstance(row, Mapping) else row)
    return buf.getvalue()


def json_ready(obj: Any) -> Any:
    """``obj`` with tuples as lists, numpy scalars and arrays as Python numbers and lists, and non-finite floats as
    None (JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k) if not isinstance(k, str) else k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_report(path: str | os.PathLike, markdown: str, *, table: str | None = None, data: Any = None) -> list[Path]:
    """Write the markdown report ``path`` and, given, the CSV ``table`` and the JSON of ``data`` (``json_ready``)
    beside it with suffixes ``.csv`` and ``.json``; returns the paths written, the markdown first. The CSV and JSON
    are written first, so a finished markdown report always has its numbers next to it."""
    path = Path(path)
    paths = []
    if table is not None:
        paths.append(write_text_atomic(path.with_suffix(".csv"), table))
    if data is not None:
        paths.append(write_json_atomic(path.with_suffix(".json"), json_ready(data)))
    return [write_text_atomic(path, markdown), *paths]
