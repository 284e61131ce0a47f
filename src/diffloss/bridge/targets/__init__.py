"""Sampling targets of the bridge samplers by name. Each module registers its targets in ``SAMPLING_TARGETS``.

A sampling target is an unnormalized density p~ on R^d (``SamplingTarget``); not to be confused with the level
densities of ``diffloss.density`` or the prediction targets of ``diffloss.target``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diffloss.bridge.targets.base import SamplingTarget
from diffloss.errors import unknown_name

SAMPLING_TARGETS: dict[str, Callable[..., SamplingTarget]] = {}


def get_sampling_target(name: str, **params: Any) -> SamplingTarget:
    """A sampling target by name, e.g. ``get_sampling_target("funnel")``."""
    if name not in SAMPLING_TARGETS:
        raise unknown_name("sampling target", name, SAMPLING_TARGETS)
    return SAMPLING_TARGETS[name](**params)


__all__ = ["SAMPLING_TARGETS", "SamplingTarget", "get_sampling_target"]

from diffloss.bridge.targets import bayes, synthetic  # noqa: E402,F401  (each registers its targets)
