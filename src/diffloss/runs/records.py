"""Reading the results of finished runs: one JSON record per file, gathered over a grid."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from diffloss.errors import DifflossError


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``, or None when it does not exist; a file that is not valid JSON is a one-line error."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DifflossError(f"{path} is not valid JSON ({e}); delete it to rerun that cell") from None


def collect(files: Iterable[tuple[str | os.PathLike, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The record of every existing file of ``files`` (pairs of a path and the settings of its run), each
    extended by those settings, in the order given; missing files (runs not finished) are left out."""
    rows = []
    for path, settings in files:
        record = read_json(path)
        if record is not None:
            rows.append({**record, **settings})
    return rows
