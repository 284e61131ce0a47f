"""User-facing errors: raised for bad input, printed by the CLI as one line with a non-zero exit."""

from __future__ import annotations

from collections.abc import Iterable


class DifflossError(ValueError):
    """Bad input that the user can fix. The message says what was wrong and what to do."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> DifflossError:
    """The error for a name that is not in a registry (process, target, weighting, dataset, ...)."""
    return DifflossError(f"unknown {kind} {name!r}; choose one of: {', '.join(sorted(known))}")
