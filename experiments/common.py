"""What the experiment scripts share: a progress line, the CLI entry point, a run's checkpoint step, the mean and
standard deviation of a metric over seeds, and the rule that decides whether two seed-averaged metrics differ."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from diffloss.errors import DifflossError


def log(msg: str) -> None:
    """One progress line on stderr, prefixed by the wall-clock time."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_cli(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s status; a ``DifflossError`` becomes a one-line ``Error:`` and exit status 2."""
    try:
        sys.exit(main())
    except DifflossError as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(2)


Stat = tuple[float, float, int]
"""(mean, sample std, number of seeds) of a metric over seeds."""


def mean_std(values: Sequence[float | None]) -> Stat:
    """(mean, sample standard deviation with n - 1 (nan for one value), n) of the finite ``values`` (None and
    non-finite values are left out)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def fmt(ms: Stat, show_n: bool = True) -> str:
    """A ``Stat`` as table text: "mean ± std (n=N)" (without "(n=N)" unless ``show_n``), "mean (n=1)" for one seed,
    "—" for none."""
    mean, std, n = ms
    if n == 0:
        return "—"
    return f"{mean:.3g} ± {std:.2g}" + (f" (n={n})" if show_n else "") if n > 1 else f"{mean:.3g} (n=1)"


def compare(base: Stat, new: Stat, name: str) -> tuple[float, str]:
    """(relative change of the mean in %, verdict) of ``new`` (called ``name`` in the verdict) against ``base``,
    for a lower-is-better metric such as FID. A difference counts only when the means differ by more than the
    larger of the two seed standard deviations, and needs at least 2 seeds a side."""
    change = 100 * (new[0] - base[0]) / base[0]
    if min(base[2], new[2]) < 2:
        return change, "undecided (fewer than 2 seeds)"
    if abs(new[0] - base[0]) <= max(base[1], new[1]):
        return change, "no difference beyond the seed spread"
    return change, f"{name} better" if new[0] < base[0] else f"{name} worse"


def checkpoint_step(run_dir: Path) -> int:
    """The step of the `diffloss train` checkpoint in ``run_dir``, 0 if there is none."""
    from diffloss.checkpoint import load_checkpoint
    from diffloss.train import CHECKPOINT_FILE

    path = run_dir / CHECKPOINT_FILE
    return int(load_checkpoint(path)[1]["step"]) if path.exists() else 0
