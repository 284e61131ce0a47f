"""Sampler convergence on a 2-D Gaussian with its exact denoiser (the README's numbers).

Starts n points from the exact marginal at s_max, runs each sampler over a Karras (rho = 7) schedule of K steps
on the VP process, and prints the RMS distance to the exact probability-flow ODE map of the same points and the
sample variance / data variance per dimension.

Run: PYTHONPATH=src python experiments/sampler_convergence.py
"""

from __future__ import annotations

import torch

from diffloss.process import get_process
from diffloss.sample import sample, step_levels

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
VAR = torch.tensor([0.25, 1.0], dtype=torch.float64)


def exact_denoiser(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return MU + VAR / (VAR + s[:, None] ** 2) * (x - MU)


def main(n: int = 20000) -> None:
    print(f"{'sampler':>8} {'K':>5} {'rms to exact ODE':>17} {'var ratio (dim 0, dim 1)':>26}")
    for sampler, eta in (("euler", 0.0), ("heun", 0.0), ("dpm2", 0.0), ("ddim", 1.0)):
        for steps in (4, 16, 64, 256):
            sigmas = step_levels(get_process("vp"), steps)
            z = torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            x = MU + (VAR + sigmas[0] ** 2).sqrt() * z
            exact = MU + (VAR / (VAR + sigmas[0] ** 2)).sqrt() * (x - MU)
            g = torch.Generator().manual_seed(2)
            out = sample(exact_denoiser, x, sigmas, sampler=sampler, eta=eta, generator=g)
            rms = (out - exact).pow(2).mean().sqrt().item() if eta == 0 else float("nan")
            ratio = (out.var(0) / VAR).tolist()
            name = sampler + ("(eta=1)" if eta else "")
            print(f"{name:>8} {steps:>5} {rms:>17.4g} {ratio[0]:>12.4f} {ratio[1]:>12.4f}")


if __name__ == "__main__":
    main()
