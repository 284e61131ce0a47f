"""Sampling targets by name. Each module registers its targets in ``TARGETS``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffloss.bridge.targets.base import Density
from diffloss.errors import unknown_name

TARGETS: dict[str, Callable[..., Density]] = {}


def get_density(name: str, **params: Any) -> Density:
    """A target density by name, e.g. ``get_density("funnel")``."""
    if name not in TARGETS:
        raise unknown_name("sampling target", name, TARGETS)
    return TARGETS[name](**params)


__all__ = ["TARGETS", "Density", "get_density"]

from diffloss.bridge.targets import bayes, synthetic  # noqa: E402,F401  (each registers its targets)
