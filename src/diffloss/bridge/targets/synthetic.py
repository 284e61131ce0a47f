"""Synthetic sampling targets: Gaussian (for tests), Funnel, GMM40, mixture of Student-t, Many-Well.

Definitions follow the reference benchmark (Blessing et al., DenisBless/variational_sampling_methods); the mixture
locations are the benchmark's JAX-PRNG draws, shipped in ``diffloss/assets/bridge`` (see the README there).
Every ``log_prob`` is unnormalized where ``log_Z != 0``, batched (B, d) -> (B,) and computes in the input's dtype.
``init_std`` is the suggested standard deviation of the sampler's initial Gaussian prior.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from importlib import resources

import numpy as np
import torch

from diffloss.bridge.targets import SAMPLING_TARGETS
from diffloss.bridge.targets.base import SamplingTarget
from diffloss.errors import DifflossError
from diffloss.gaussian import LOG_2PI, gaussian_log_pdf


def mixture_locations(kind: str, dim: int, seed: int = 0, prng: str = "legacy") -> torch.Tensor:
    """Component locations (K, dim) float64 from the shipped ``jax_prng_mixture_locs.npz``."""
    key = f"{kind}_d{dim}_seed{seed}_{prng}"
    with resources.files("diffloss").joinpath("assets/bridge/jax_prng_mixture_locs.npz").open("rb") as f:
        data = np.load(f, allow_pickle=False)
        if key not in data.files:
            raise DifflossError(
                f"no stored {kind} locations for dim={dim}, seed={seed}, prng={prng!r}; "
                "stored: dim 2 or 50, seed 0-2, prng legacy or partitionable"
            )
        return torch.from_numpy(data[key].astype(np.float64))


class Gaussian(SamplingTarget):
    """Diagonal Gaussian N(mean, diag(std^2)) times exp(log_Z): an exactly known target for tests."""

    name = "gaussian"

    def __init__(self, dim: int = 2, mean: float = 1.0, std: float = 0.5, log_Z: float = 0.0):
        self.dim, self.mean, self.std, self.log_Z = dim, float(mean), float(std), float(log_Z)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_Z + gaussian_log_pdf(x, self.mean, 2 * math.log(self.std), sum_last=True)

    def score(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        return (self.mean - x) / self.std**2

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.mean + self.std * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)


class Funnel(SamplingTarget):
    """Neal's funnel: x_0 ~ N(0, 3^2), x_i | x_0 ~ N(0, e^{x_0}) for i >= 1; normalized (log Z = 0)."""

    name = "funnel"
    log_Z = 0.0

    def __init__(self, dim: int = 10):
        if dim < 2:
            raise DifflossError(f"funnel needs dim >= 2, got {dim}")
        self.dim = dim

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        # log N(v; 0, 3^2) + sum_i log N(x_i; 0, e^v) written out: one exp(-v) per row (and the published runs' bits)
        v, rest = x[:, 0], x[:, 1:]
        log_v = -0.5 * (v / 3.0) ** 2 - math.log(3.0) - 0.5 * LOG_2PI
        log_rest = -0.5 * (rest**2).sum(-1) * torch.exp(-v) - 0.5 * (self.dim - 1) * (v + LOG_2PI)
        return log_v + log_rest

    def score(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """d/dv = -v/9 + e^{-v} sum_i x_i^2 / 2 - (d - 1)/2 and d/dx_i = -x_i e^{-v}."""
        v, rest = x[:, :1], x[:, 1:]
        inv_var = torch.exp(-v)
        dv = -v / 9.0 + 0.5 * inv_var * (rest**2).sum(-1, keepdim=True) - 0.5 * (self.dim - 1)
        return torch.cat([dv, -rest * inv_var], 1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Exact draws, clipped to [-30, 30] as in the reference benchmark."""
        v = 3.0 * torch.randn(n, 1, generator=generator, dtype=torch.float64)
        rest = torch.exp(v / 2) * torch.randn(n, self.dim - 1, generator=generator, dtype=torch.float64)
        return torch.cat([v, rest], 1).clamp(-30.0, 30.0)


class _Mixture(SamplingTarget):
    """Equal-weight mixture of product components centred at ``self.locs`` (K, dim); log Z = 0."""

    log_Z = 0.0
    locs: torch.Tensor

    @abstractmethod
    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Per-coordinate log density of one component at z = x - loc, elementwise."""

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        locs = self.locs.to(x)
        per = self.component_log_prob(x[:, None, :] - locs[None]).sum(-1)  # (B, K)
        return torch.logsumexp(per, 1) - math.log(len(locs))

    def score(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """sum_k w_k(x) grad c(x - mu_k), with w the components' posterior weights (softmax of their log densities)
        and grad c the ``component_score``; one forward pass over the (B, K, dim) differences, no backward."""
        z = x[:, None, :] - self.locs.to(x)[None]
        weights = torch.softmax(self.component_log_prob(z).sum(-1), 1)  # (B, K)
        return (weights[:, :, None] * self.component_score(z)).sum(1)

    @abstractmethod
    def component_score(self, z: torch.Tensor) -> torch.Tensor:
        """Per-coordinate derivative of ``component_log_prob`` at z, elementwise."""

    def modes(self) -> torch.Tensor:
        return self.locs

    def _pick(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.locs[torch.randint(len(self.locs), (n,), generator=generator)]


class GMM40(_Mixture):
    """40 equal-weight components N(mu_k, I) in d=50 (benchmark means, ``legacy`` seed 0 by default).

    Initialisation as in the reference configurations: prior std 40, the half-width of the box [-40, 40] of the means
    (DenisBless/variational_sampling_methods ``gaussian_mixture40.yaml``, CMCD/DIS ``initial_scale: 40``; wider than
    the target's per-coordinate std 23, so every mode is covered), and CMCD Langevin step 0.5 per step, i.e. noise
    variance 1 per step (sebaleh87/dds_optim GMM runs: per-step diffusion ``beta_max`` 1 at dt = 1), stable on the
    unit-variance components (0.5 * 1 < 2) and contracting to a mode within a few steps once beta is near 1.
    """

    name = "gmm40"
    init_std = 40.0
    langevin_step = 0.5

    def __init__(self, dim: int = 50, seed: int = 0, prng: str = "legacy"):
        self.locs = mixture_locations("gmm40", dim, seed, prng)
        self.half_sq_norms = 0.5 * (self.locs**2).sum(-1)  # |mu_k|^2 / 2, for the score's logits
        self.dim = dim

    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return gaussian_log_pdf(z, 0.0, 0.0)

    def component_score(self, z: torch.Tensor) -> torch.Tensor:
        return -z

    def score(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """sum_k w_k(x) mu_k - x, with the component weights w = softmax_k(x.mu_k - |mu_k|^2 / 2) (the |x|^2 / 2 of
        every component's log density cancels): two (B, dim) x (dim, K) products instead of a (B, K, dim) tensor.
        The logits are formed in float64 whatever the dtype of x (in float32 x.mu_k ~ 1e4 would carry an error of
        ~1e-3 nats), then the result is cast back."""
        locs = self.locs.to(device=x.device)
        logits = x.double() @ locs.T - self.half_sq_norms.to(device=x.device)
        return (torch.softmax(logits, 1) @ locs).to(x.dtype) - x

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self._pick(n, generator) + torch.randn(n, self.dim, generator=generator, dtype=torch.float64)


class MixtureStudentT(_Mixture):
    """10 equal-weight components, each a product of Student-t(df=2, loc mu_k, scale 1), d=50."""

    name = "mos"
    df = 2.0

    def __init__(self, dim: int = 50, seed: int = 0, prng: str = "legacy"):
        self.locs = mixture_locations("mos10", dim, seed, prng)
        self.dim = dim
        self.init_std = float(torch.sqrt(1.0 + self.locs.var(0, unbiased=False).mean()))

    def component_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        nu = self.df
        const = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        return const - 0.5 * (nu + 1) * torch.log1p(z**2 / nu)

    def component_score(self, z: torch.Tensor) -> torch.Tensor:
        return -(self.df + 1) * z / (self.df + z**2)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        normal = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        # chi^2 with df = 2 is 2 * Exp(1) = -2 log U
        chi2 = -2.0 * torch.log(torch.rand(n, self.dim, generator=generator, dtype=torch.float64))
        return self._pick(n, generator) + normal / torch.sqrt(chi2 / self.df)


class ManyWell(SamplingTarget):
    """Many-Well, d=32: 16 independent pairs with log p~(a, b) = 0.5 a + 6 a^2 - a^4 - b^2/2.

    log Z = 16 (log 11784.50927 + 0.5 log 2 pi) = 164.6957. ``sample`` is exact up to a grid: each double-well
    coordinate is drawn by inverting its CDF tabulated on 20001 points of [-3, 3] (mass outside < 1e-30).
    """

    name = "many_well"
    _Z_WELL = 11784.50927

    def __init__(self, dim: int = 32):
        if dim % 2:
            raise DifflossError(f"many_well needs an even dim, got {dim}")
        self.dim = dim
        self.log_Z = dim // 2 * (math.log(self._Z_WELL) + 0.5 * LOG_2PI)

    @staticmethod
    def well_log_prob(a: torch.Tensor) -> torch.Tensor:
        """Unnormalized log density of one double-well coordinate, elementwise."""
        return 0.5 * a + 6.0 * a**2 - a**4

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, 0::2], x[:, 1::2]
        return (self.well_log_prob(a) - 0.5 * b**2).sum(-1)

    def score(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """0.5 + 12 a - 4 a^3 on the double-well coordinates a, -b on the Gaussian ones."""
        a, b = x[:, 0::2], x[:, 1::2]
        return torch.stack([0.5 + 12.0 * a - 4.0 * a**3, -b], 2).reshape(x.shape)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        grid = torch.linspace(-3.0, 3.0, 20001, dtype=torch.float64)
        p = torch.exp(self.well_log_prob(grid) - self.well_log_prob(grid).max())
        cdf = torch.cumsum(p, 0)
        cdf = cdf / cdf[-1]
        u = torch.rand(n * (self.dim // 2), generator=generator, dtype=torch.float64)
        a = grid[torch.searchsorted(cdf, u).clamp(max=len(grid) - 1)].reshape(n, self.dim // 2)
        b = torch.randn(n, self.dim // 2, generator=generator, dtype=torch.float64)
        return torch.stack([a, b], 2).reshape(n, self.dim)


SAMPLING_TARGETS.update(
    {
        "gaussian": Gaussian,
        "funnel": Funnel,
        "gmm40": GMM40,
        "mos": MixtureStudentT,
        "many_well": ManyWell,
    }
)
