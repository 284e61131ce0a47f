"""Figures, for the library and every script alike: pyplot on the Agg backend (no display needed), and one way to
save a figure (atomic, then closed). ``diffloss.runs`` re-exports both."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from diffloss.io import atomic_write


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, **savefig: Any) -> Path:
    """Save ``fig`` to ``path`` atomically (the format from the suffix; ``savefig`` keywords such as ``dpi`` are
    passed on) and close it; returns ``path``."""
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, **savefig))
    finally:
        pyplot().close(fig)
