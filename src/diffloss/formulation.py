"""The unified formulation at given noise levels: how a process and every prediction target relate there."""

from __future__ import annotations

import torch

from diffloss.precond import check_precond, edm_precond
from diffloss.process import get_process
from diffloss.target import TARGETS, get_target


def formulation_table(
    process: str, sigmas: list[float], precond: str = "none", sigma_data: float = 0.5
) -> list[dict[str, float]]:
    """For each noise-to-signal ratio s: lambda, t, alpha, sigma and every target's loss factor vs x0; with
    ``precond="edm"`` also EDM's c_skip, c_out, c_in (on x~ = x_t / alpha) and c_noise at ``sigma_data``."""
    check_precond(precond)
    p = get_process(process)
    s = torch.tensor(sigmas, dtype=torch.float64)
    lam = -2 * torch.log(s)
    t = p.t_of_logsnr(lam)
    a, sg = p.alpha_sigma(t)
    rows = []
    for i in range(len(sigmas)):
        row = {"nsr": sigmas[i], "logsnr": lam[i].item(), "t": t[i].item(), "alpha": a[i].item(), "sigma": sg[i].item()}
        for name in TARGETS:
            row[f"factor_{name}"] = get_target(name).loss_factor(a[i], sg[i]).item()
        if precond == "edm":
            coefs = edm_precond(s[i], sigma_data)
            row |= {k: v.item() for k, v in zip(("c_skip", "c_out", "c_in", "c_noise"), coefs)}
        rows.append(row)
    return rows
