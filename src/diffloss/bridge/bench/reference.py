"""Reference values printed beside our benchmark results.

``PUBLISHED``: values reported by [BRIDGE] (Sanokowski et al., *Rethinking Losses for Diffusion Bridge Samplers*,
NeurIPS 2025, arXiv 2506.10982) for CMCD trained with rKL-LD at the paper budget, and the best known LGCP ELBO.
``LOG_Z``: our own estimates of log Z for the same targets, each reproduced by a test in tests/test_bridge_bayes.py.
Since ELBO ≤ log Z, log Z is the ceiling every ELBO in a column should stay under.
"""

from __future__ import annotations

from dataclasses import dataclass

BRIDGE = "Sanokowski et al. 2025 (arXiv 2506.10982)"


@dataclass(frozen=True)
class Reference:
    """A reference value of ``metric`` on ``target``; ``sampler``/``loss`` are None when it is method-independent;
    ``note`` is printed beside the value in the report."""

    target: str
    metric: str
    value: float
    source: str
    sampler: str | None = None
    loss: str | None = None
    note: str = ""


PUBLISHED: tuple[Reference, ...] = (
    Reference("seeds", "elbo", -73.45, BRIDGE, "cmcd", "rkl-ld"),
    Reference("sonar", "elbo", -108.83, BRIDGE, "cmcd", "rkl-ld"),
    Reference("german_credit", "elbo", -504.58, BRIDGE, "cmcd", "rkl-ld"),
    Reference("brownian", "elbo", 1.06, BRIDGE, "cmcd", "rkl-ld"),
    Reference("lgcp", "elbo", 497.85, f"best known ELBO, as quoted by {BRIDGE}", note="best known"),
)

LOG_Z: tuple[Reference, ...] = (
    Reference("seeds", "log_z", -73.40, "importance sampling over (a, log τ), random effects by quadrature (±0.02)"),
    Reference("sonar", "log_z", -108.40, "importance sampling, Student-t proposal from the Laplace fit (±0.1)"),
    Reference(
        "german_credit", "log_z", -504.47, "importance sampling, Student-t proposal from the Laplace fit (±0.02)"
    ),
    Reference("brownian", "log_z", 1.188, "path integrated in closed form, 2-D quadrature over the scales (exact)"),
)


def reference_for(references: tuple[Reference, ...], target: str) -> Reference | None:
    """The first reference of ``target`` in ``references``, or None."""
    return next((r for r in references if r.target == target), None)
