"""The interface of a sampling target: an unnormalized log density on R^d that a bridge sampler learns to sample."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class SamplingTarget(ABC):
    """A sampling target: an unnormalized density p~(x) on R^dim, given by its log.

    ``log_prob`` is batched, (B, dim) -> (B,), differentiable, and computes in the dtype of its input
    (float64 works). ``log_Z`` is log of the normalizing constant where known, else None. Targets with an
    exact sampler override ``sample``; ``reference_samples`` returns samples to compare against (exact
    draws, or stored ground-truth samples) and ``modes`` the mode locations for entropic mode coverage.

    Two suggestions for the sampler's initialisation: ``init_std``, the std of the initial Gaussian prior, and
    ``langevin_step``, the step size s = sigma^2 / (2K) of CMCD's Langevin drift (sigma^2 / 2) grad log p~ per
    Euler-Maruyama step, or None for the default sigma = 1. Explicit Euler on a target whose -log p~ has curvature
    up to lambda_max is stable only if s * lambda_max < 2 (it multiplies the distance to a Gaussian target's mean by
    1 - s * lambda per step), so stiff targets must give a small step; see
    ``diffloss.bridge.config.default_init_sigma``.
    """

    name: str = "target"
    dim: int
    log_Z: float | None = None
    init_std: float = 1.0
    langevin_step: float | None = None

    @abstractmethod
    def log_prob(self, x: torch.Tensor) -> torch.Tensor: ...

    def score(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """grad log p~(x), (B, dim) -> (B, dim), in the dtype of x.

        This default differentiates ``log_prob`` by autograd; with ``create_graph`` (and x requiring grad) the result
        is differentiable in x again (second order, for rKL-R's reparameterized gradient). Targets override it with a
        closed form written in torch ops, which is differentiable in x whenever x requires grad, whatever
        ``create_graph`` says."""
        with torch.enable_grad():
            xi = x if create_graph and x.requires_grad else x.detach().requires_grad_(True)
            (score,) = torch.autograd.grad(self.log_prob(xi).sum(), xi, create_graph=create_graph)
        return score

    @property
    def has_sampler(self) -> bool:
        return type(self).sample is not SamplingTarget.sample

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact samples (n, dim) as float64."""
        raise NotImplementedError(f"target {self.name!r} has no exact sampler")

    def reference_samples(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """Samples for Sinkhorn/MMD: exact draws where there is a sampler, else None (or stored samples)."""
        return self.sample(n, generator) if self.has_sampler else None

    def modes(self) -> torch.Tensor | None:
        """(K, dim) mode locations for mixtures (entropic mode coverage), else None."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, log_Z={self.log_Z})"
