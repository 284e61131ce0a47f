"""Training losses computed from the log Radon-Nikodym derivative R of a simulated batch (``Trajectory.log_rn``;
conventions in docs/design.md, section 'Bridge samplers').

Each loss returns a per-sample vector (B,) whose batch mean is the loss (or a surrogate with the right gradient);
the caller reduces it. Losses marked ``detached`` must be given a path simulated with ``detach_path=True``.

    rkl-r  : R, gradients through the reparameterized path (reverse KL, reparameterization trick)
    lv     : (R - mean R)^2 * B/(B-1), the unbiased batch variance of R (log-variance loss)
    rkl-ld : (R - b) log q + R with R - b held constant, b the batch-mean baseline scaled by B/(B-1) (i.e. the
             leave-one-out mean, which keeps the estimator unbiased); its gradient is the log-derivative estimator
             E[(R - b) grad log q] + E[grad R] of grad E_q[R]
    tb     : (R + log Z)^2 with a learned log Z (trajectory balance)
"""

from __future__ import annotations

import torch

from diffloss.bridge.samplers import Trajectory
from diffloss.errors import DifflossError, unknown_name

BRIDGE_LOSSES = ("rkl-r", "lv", "rkl-ld", "tb")
DETACHED = {"rkl-r": False, "lv": True, "rkl-ld": True, "tb": True}


def check_batch(batch: int) -> None:
    if batch < 2:
        raise DifflossError(f"--batch must be >= 2 (the variance and the baseline of R need two samples), got {batch}")


def loss_terms(name: str, traj: Trajectory, log_z: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample loss terms (B,) of loss ``name``; ``log_z`` is the learned log Z (``tb`` only)."""
    if name not in BRIDGE_LOSSES:
        raise unknown_name("loss", name, BRIDGE_LOSSES)
    R = traj.log_rn
    B = R.shape[0]
    check_batch(B)
    if name == "rkl-r":
        return R
    centred = (R - R.mean()) * (B / (B - 1))
    if name == "lv":
        return centred * (R - R.mean())
    if name == "rkl-ld":
        return centred.detach() * traj.log_q + R
    if log_z is None:
        raise DifflossError("the tb loss needs a learned log Z")
    return (R + log_z) ** 2
