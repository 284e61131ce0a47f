"""Mean ± standard deviation of a metric over seeds, and the rule that decides whether two such means differ.

Convention (one for every report): the standard deviation is the sample one (ddof = 1); with a single seed it is
undefined, so ``std`` is NaN and the value is shown as ``"mean (n=1)"``, never as ``"mean ± 0"``. Values that are
None or not finite (a diverged run, a metric a run could not compute) are left out and not counted in ``n``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np


class Stat(NamedTuple):
    """(mean, sample std, number of seeds) of a metric over seeds; ``std`` is NaN for n = 1, both NaN for n = 0."""

    mean: float
    std: float
    n: int

    def text(self, spec: str = ".3g", std_spec: str = ".2g", *, show_n: bool = True, unit: str = "") -> str:
        """Table text: ``"mean ± std (n=N)"`` (without ``"(n=N)"`` unless ``show_n``), ``"mean (n=1)"`` for one
        seed, ``"—"`` for none. ``spec``/``std_spec`` format the mean and the std; ``unit`` follows the number."""
        if self.n == 0:
            return "—"
        if self.n == 1:
            return f"{self.mean:{spec}}{unit} (n=1)"
        return f"{self.mean:{spec}} ± {self.std:{std_spec}}{unit}" + (f" (n={self.n})" if show_n else "")

    def to_json(self) -> dict[str, float | int | None]:
        """``{"mean", "std", "n"}`` with None for NaN (JSON has no NaN)."""
        return {
            "mean": self.mean if math.isfinite(self.mean) else None,
            "std": self.std if math.isfinite(self.std) else None,
            "n": self.n,
        }


def mean_std(values: Iterable[float | None]) -> Stat:
    """The ``Stat`` of the finite ``values`` (None and non-finite values are left out)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return Stat(math.nan, math.nan, 0)
    return Stat(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size))


def compare(
    base: Stat | tuple[float, float, int], new: Stat | tuple[float, float, int], name: str
) -> tuple[float, str]:
    """(relative change of the mean in %, verdict) of ``new`` (called ``name`` in the verdict) against ``base``,
    for a lower-is-better metric such as FID. A difference counts only when the means differ by more than the
    larger of the two seed standard deviations, and needs at least 2 seeds a side."""
    change = 100 * (new[0] - base[0]) / base[0]
    if min(base[2], new[2]) < 2:
        return change, "undecided (fewer than 2 seeds)"
    if abs(new[0] - base[0]) <= max(base[1], new[1]):
        return change, "no difference beyond the seed spread"
    return change, f"{name} better" if new[0] < base[0] else f"{name} worse"
