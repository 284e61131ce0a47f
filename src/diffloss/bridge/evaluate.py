"""Evaluation of a bridge sampler on fresh trajectories: ELBO, log Z_hat, ESS (``diffloss.bridge.metrics``) and the
sample metrics against the target's reference samples or modes."""

from __future__ import annotations

import math
from typing import Any

import torch

from diffloss.bridge import metrics as M
from diffloss.bridge.samplers import BridgeSampler, simulate
from diffloss.bridge.targets import SamplingTarget


@torch.no_grad()
def evaluate_bridge(
    model: BridgeSampler, target: SamplingTarget, n: int, generator: torch.Generator, sinkhorn: bool = True
) -> dict[str, Any]:
    """ELBO, log Z estimate (and its error), ESS, Sinkhorn (eps stated), MMD and EMC on n fresh trajectories.

    ``sinkhorn=False`` leaves the Sinkhorn divergence null (its O(n^2)-per-iteration solve can cost more than a
    short training run).
    ELBO and log Z come from the same samples. Sample metrics are null where the target has no reference samples
    or modes; ``log_z_error`` = log Z_hat - log Z where log Z is known. Non-finite values (a broken sampler) are null.
    ``generator`` lives on the model's device; the reference samples are drawn on the CPU (by ``generator`` itself
    there, else by a CPU generator with its seed) and the metrics computed there.
    """
    traj = simulate(model, target, n, generator, detach_path=True)
    R, x = traj.log_rn.double().cpu(), traj.x.cpu()
    if generator.device.type != "cpu":
        generator = torch.Generator().manual_seed(generator.initial_seed())
    out: dict[str, Any] = {"n": n, "elbo": M.elbo(R), "log_z": M.log_z_hat(R), "ess": M.ess(R)}
    out["log_z_error"] = out["log_z"] - target.log_Z if target.log_Z is not None else None
    finite = bool(torch.isfinite(x).all())
    ref = target.reference_samples(n, generator) if finite else None
    out["sinkhorn"], out["sinkhorn_eps"] = M.sinkhorn(x, ref) if ref is not None and sinkhorn else (None, None)
    out["mmd"] = M.mmd(x, ref) if ref is not None else None
    modes = target.modes()
    out["emc"] = M.emc(x, modes) if modes is not None and finite else None
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}
