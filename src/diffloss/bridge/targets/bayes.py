"""Bayesian posterior targets of the bridge-sampler benchmark: logistic regression (Sonar, Ionosphere, German
Credit), Seeds, Brownian motion with unknown scales, and the log-Gaussian Cox process on the pines data.

Each log density is the one of the reference benchmark (Blessing et al., *Beyond ELBOs*), with every normalizing
constant of priors and likelihoods included (so log Z is the log marginal likelihood of the model). Constrained
parameters live in unconstrained coordinates with the log-Jacobian added. Data are read from
``diffloss/assets/bridge`` (provenance in its README.md) without pickle.
"""

from __future__ import annotations

import json
import math
from functools import cache, lru_cache
from importlib.resources import files

import numpy as np
import torch
import torch.nn.functional as F

from diffloss.bridge.targets import SAMPLING_TARGETS
from diffloss.bridge.targets.base import SamplingTarget
from diffloss.errors import DifflossError
from diffloss.gaussian import LOG_2PI, gaussian_log_pdf


def asset_path(name: str):
    """The packaged data file ``assets/bridge/<name>``."""
    return files("diffloss").joinpath("assets", "bridge", name)


# ----------------------------------------------------------------------------------------------- logistic regression


class LogisticRegression(SamplingTarget):
    """Bayesian logistic regression: y_n ~ Bernoulli(sigmoid(⟨w, x_n⟩)), w ∈ R^d with prior N(0, prior_std² I),
    or a flat prior (improper, log prior 0) when ``prior_std`` is None.

    ``features`` (n, d) already hold the intercept column; ``labels`` (n,) are 0/1.
    """

    def __init__(self, name: str, features: np.ndarray, labels: np.ndarray, prior_std: float | None = 1.0):
        self.name = name
        self.features = torch.as_tensor(features, dtype=torch.float64)
        self.labels = torch.as_tensor(labels, dtype=torch.float64)
        self.prior_std = prior_std
        self.dim = self.features.shape[1]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        logits = x @ self.features.to(x).T  # (B, n)
        log_lik = (self.labels.to(x) * logits - F.softplus(logits)).sum(-1)
        if self.prior_std is None:
            return log_lik
        return log_lik + gaussian_log_pdf(x, 0.0, 2 * math.log(self.prior_std), sum_last=True)

    def score(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """sum_n (y_n - sigmoid(<w, x_n>)) x_n - w / prior_std^2 (no prior term when the prior is flat)."""
        features = self.features.to(x)
        grad = (self.labels.to(x) - torch.sigmoid(x @ features.T)) @ features
        return grad if self.prior_std is None else grad - x / self.prior_std**2


def standardize_with_intercept(x: np.ndarray) -> np.ndarray:
    """Columns centred and divided by their population std (std 0 → 1), then a column of ones prepended."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(0)
    std[std == 0] = 1.0
    return np.hstack([np.ones((len(x), 1)), (x - x.mean(0)) / std])


def uci_binary(name: str) -> LogisticRegression:
    """Sonar (d=61) or Ionosphere (d=35): standardized features + intercept, labels (Y+1)/2, prior N(0, I)."""
    with np.load(asset_path(f"{name}.npz"), allow_pickle=False) as data:
        x, y = data["X"], data["Y"]
    return LogisticRegression(name, standardize_with_intercept(x), (y + 1) / 2, prior_std=1.0)


def sonar() -> LogisticRegression:
    return uci_binary("sonar")


def ionosphere() -> LogisticRegression:
    return uci_binary("ionosphere")


@cache
def credit_posterior_samples() -> torch.Tensor:
    """The reference benchmark's 10 000 ground-truth posterior samples of German Credit, (10000, 25) float64."""
    return torch.from_numpy(np.load(asset_path("german_credit10k.npy"), allow_pickle=False))


class GermanCredit(LogisticRegression):
    """German Credit (d=25) as in the reference benchmark: features divided by their std (not centred), intercept
    prepended, **flat prior**. log Z ≈ −504.47 (importance sampling; Laplace's approximation gives −504.73).

    The reference models P(bad credit, label 2) = sigmoid(−⟨w, x⟩), i.e. y = 1 for *good* credit (label 1); this
    sign is what its ground-truth samples follow. ``reference_samples`` draws from those 10 000 samples without
    replacement.

    The flat prior and the uncentred features make the target stiff: the curvature of -log p~ is
    X^T diag(p(1 - p)) X, at most lambda* = lambda_max(X^T X) / 4 = 3.6e4 (reached at w = 0; 2.1e4 at the MAP), so
    CMCD's Langevin step must stay below 2 / lambda* = 5.5e-5 (see ``SamplingTarget``). ``langevin_step`` = 5e-5 is the
    reference's (sebaleh87/dds_optim Credit runs: per-step diffusion ``beta_max`` 0.01, step 0.01^2 / 2); the default
    sigma = 1 with K = 32 gives a step of 1/64, 300x too large, and the Euler scheme blows up (ELBO -1e6).
    """

    langevin_step = 5e-5

    def __init__(self):
        data = np.loadtxt(asset_path("german.data-numeric"))
        x = data[:, :-1] / data[:, :-1].std(0)
        good = (data[:, -1] == 1).astype(np.float64)
        super().__init__("german_credit", np.hstack([np.ones((len(x), 1)), x]), good, prior_std=None)

    def reference_samples(self, n: int, generator: torch.Generator) -> torch.Tensor:
        samples = credit_posterior_samples()
        if not 0 < n <= len(samples):
            raise DifflossError(f"German Credit has {len(samples)} reference samples, {n} were asked for; ask fewer")
        return samples[torch.randperm(len(samples), generator=generator)[:n]]


# ------------------------------------------------------------------------------------------------------------- Seeds


class Seeds(SamplingTarget):
    """Random-effects logistic regression on the BUGS "Seeds" data (21 plates), d = 26.

    τ ~ Gamma(shape 0.01, rate 0.01) (a precision); a0, a1, a2, a12 ~ N(0, 10²); b_j ~ N(0, τ^{-1/2});
    R_j ~ Binomial(N_j, sigmoid(a0 + a1·X1_j + a2·X2_j + a12·X1_j·X2_j + b_j)), binomial coefficients included.
    Coordinates z = [a0, a1, a12, a2, b_1..b_21, u] with τ = e^u and the log-Jacobian u added.
    """

    name = "seeds"
    dim = 26
    tau_shape = 0.01
    tau_rate = 0.01
    coef_std = 10.0

    def __init__(self):
        data = json.loads(asset_path("seeds.json").read_text())
        r, n, x1, x2 = (torch.tensor(data[k], dtype=torch.float64) for k in ("R", "N", "X1", "X2"))
        log_binom = torch.lgamma(n + 1) - torch.lgamma(r + 1) - torch.lgamma(n - r + 1)
        self.plates = torch.stack([r, n, x1, x2, x1 * x2, log_binom])  # (6, 21)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        r, n, x1, x2, x12, log_binom = self.plates.to(z)
        a0, a1, a12, a2 = z[:, 0:1], z[:, 1:2], z[:, 2:3], z[:, 3:4]
        b, u = z[:, 4:25], z[:, 25]
        a, k = self.tau_shape, self.tau_rate
        log_prior_tau = a * math.log(k) - math.lgamma(a) + (a - 1) * u - k * torch.exp(u)
        log_prior_coef = gaussian_log_pdf(z[:, :4], 0.0, 2 * math.log(self.coef_std), sum_last=True)
        log_prior_b = gaussian_log_pdf(b, 0.0, -u[:, None], sum_last=True)  # variance 1 / tau
        logits = a0 + a1 * x1 + a2 * x2 + a12 * x12 + b
        log_lik = (log_binom + r * logits - n * F.softplus(logits)).sum(-1)
        return log_prior_tau + u + log_prior_coef + log_prior_b + log_lik

    def score(self, z: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """With e_j = R_j - N_j sigmoid(logit_j) summed over plates: d/da = sum_j e_j X_j - a / 10^2 for the four
        coefficients (X = 1, X1, X1 X2, X2), d/db_j = e_j - tau b_j, and d/du = shape - rate tau - tau |b|^2 / 2 +
        21 / 2 (prior of tau, its log-Jacobian 1, and the b prior's log-variance term)."""
        r, n, x1, x2, x12, _ = self.plates.to(z)
        a0, a1, a12, a2 = z[:, 0:1], z[:, 1:2], z[:, 2:3], z[:, 3:4]
        b, u = z[:, 4:25], z[:, 25:26]
        err = r - n * torch.sigmoid(a0 + a1 * x1 + a2 * x2 + a12 * x12 + b)  # (B, 21)
        design = torch.stack([torch.ones_like(x1), x1, x12, x2], 1)  # (21, 4), in the order of z[:, :4]
        d_coef = err @ design - z[:, :4] / self.coef_std**2
        tau = torch.exp(u)
        d_b = err - tau * b
        d_u = self.tau_shape - self.tau_rate * tau - 0.5 * tau * (b**2).sum(-1, keepdim=True) + 0.5 * b.shape[1]
        return torch.cat([d_coef, d_b, d_u], 1)


# ------------------------------------------------------------------------------------------------- Brownian motion


class Brownian(SamplingTarget):
    """Brownian motion with unknown scales and the middle observations missing (inference_gym), d = 32.

    σ_in, σ_obs ~ LogNormal(0, 2); x_0 ~ N(0, σ_in), x_t ~ N(x_{t−1}, σ_in) for t = 1..29;
    obs_t ~ N(x_t, σ_obs) for the 20 observed t (10..19 missing). Coordinates z = [z0, z1, x_0..x_29] with
    σ_in = softplus(z0), σ_obs = softplus(z1) and the log-Jacobian log sigmoid(z0) + log sigmoid(z1) added.
    ``log_Z`` integrates x out in closed form (a Gaussian) and the two scales by quadrature (tests reproduce it).
    """

    name = "brownian"
    dim = 32
    log_Z = 1.1877491027
    scale_prior_std = 2.0

    def __init__(self):
        locs = json.loads(asset_path("brownian_observations.json").read_text())["observed_locs_float32"]
        self.observed = torch.tensor([v is not None for v in locs])
        self.observations = torch.tensor([v for v in locs if v is not None], dtype=torch.float64)

    def log_scale_prior(self, log_sigma: torch.Tensor) -> torch.Tensor:
        """log LogNormal(σ; 0, 2) written in log σ."""
        return gaussian_log_pdf(log_sigma, 0.0, 2 * math.log(self.scale_prior_std)) - log_sigma

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        log_sigma = torch.log(F.softplus(z[:, :2]))  # (B, 2): innovation, observation
        log_jacobian = F.logsigmoid(z[:, :2]).sum(-1)
        x = z[:, 2:]
        steps = torch.diff(x, dim=1, prepend=torch.zeros_like(x[:, :1]))
        log_prior_x = gaussian_log_pdf(steps, 0.0, 2 * log_sigma[:, :1], sum_last=True)
        residuals = x[:, self.observed.to(z.device)] - self.observations.to(z)
        log_lik = gaussian_log_pdf(residuals, 0.0, 2 * log_sigma[:, 1:], sum_last=True)
        return self.log_scale_prior(log_sigma).sum(-1) + log_jacobian + log_prior_x + log_lik

    def score(self, z: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """With s = softplus(z_{0,1}): d/dx from the random-walk steps dx_t = x_t - x_{t-1} (x_{-1} = 0),
        (dx_{t+1} - dx_t) / s_in^2, and the observations, -(x_t - obs_t) / s_obs^2; d/dz_i = (d/dlog s_i) *
        sigmoid(z_i) / s_i + 1 - sigmoid(z_i) with d/dlog s = -log s / 4 - 1 + (sum of squares) / s^2 - count."""
        scales = F.softplus(z[:, :2])  # (B, 2): innovation, observation
        x = z[:, 2:]
        steps = torch.diff(x, dim=1, prepend=torch.zeros_like(x[:, :1]))
        observed = self.observed.to(z.device)
        residuals = torch.zeros_like(x)
        residuals[:, observed] = x[:, observed] - self.observations.to(z)
        var_in, var_obs = scales[:, :1] ** 2, scales[:, 1:] ** 2
        next_steps = torch.cat([steps[:, 1:], torch.zeros_like(steps[:, :1])], 1)
        d_x = (next_steps - steps) / var_in - residuals / var_obs
        squares = torch.cat([(steps**2).sum(-1, keepdim=True), (residuals**2).sum(-1, keepdim=True)], 1)
        counts = torch.tensor([x.shape[1], len(self.observations)], dtype=z.dtype, device=z.device)
        d_log_scale = -torch.log(scales) / self.scale_prior_std**2 - 1 + squares / scales**2 - counts
        sig = torch.sigmoid(z[:, :2])
        return torch.cat([d_log_scale * sig / scales + 1 - sig, d_x], 1)


# ------------------------------------------------------------------------------------------------------------ LGCP


@lru_cache(maxsize=1)
def pines_points() -> np.ndarray:
    """The 126 Finnish pines locations (126, 2) in [0, 1]²."""
    return np.loadtxt(asset_path("pines.csv"), delimiter=",", skiprows=1, usecols=(1, 2))


def grid_counts(points: np.ndarray, n_grid: int) -> np.ndarray:
    """Point counts (n_grid², ) per cell of an n_grid × n_grid grid on [0, 1]²: cell (floor(n·x), floor(n·y)) with n
    clamped to n − 1, flat index row·n_grid + col."""
    cells = np.minimum(np.floor(points * n_grid).astype(np.int64), n_grid - 1)
    return np.bincount(cells[:, 0] * n_grid + cells[:, 1], minlength=n_grid**2).astype(np.float64)


@cache
def lgcp_cholesky(
    n_grid: int, signal_variance: float, length_scale: float, dtype: torch.dtype, device: str = "cpu"
) -> torch.Tensor:
    """Lower Cholesky factor of K_ij = signal_variance·exp(−‖g_i − g_j‖ / length_scale) on the integer grid points
    g = (row, col) in flat order row·n_grid + col. Factorized once in float64 on the CPU and cached; other dtypes
    and devices are cast (and cached too)."""
    if dtype != torch.float64 or device != "cpu":
        return lgcp_cholesky(n_grid, signal_variance, length_scale, torch.float64).to(device=device, dtype=dtype)
    idx = torch.arange(n_grid, dtype=torch.float64)
    grid = torch.cartesian_prod(idx, idx)
    gram = signal_variance * torch.exp(-torch.cdist(grid, grid) / length_scale)
    return torch.linalg.cholesky(gram)


class LGCP(SamplingTarget):
    """Log-Gaussian Cox process posterior for the pines data on an n_grid × n_grid grid, d = n_grid² (1600).

    log p(f) = log N(f; μ·1, K) + Σ_i [f_i·c_i − e^{f_i}/d] with counts c_i per cell, K_ij = 1.91·exp(−‖g_i − g_j‖ /
    (n_grid/33)) on integer grid coordinates and μ = log 126 − 1.91/2 (Møller et al. 1998; Heng et al. 2020).
    The Cholesky factor of K is computed once per (grid, dtype) and cached (``lgcp_cholesky``).
    """

    name = "lgcp"
    signal_variance = 1.91
    inverse_length_scale = 33.0

    def __init__(self, n_grid: int = 40):
        if not isinstance(n_grid, int) or n_grid < 1:
            raise DifflossError(f"LGCP grid size must be a positive integer, got {n_grid}")
        self.n_grid = n_grid
        self.dim = n_grid**2
        self.counts = torch.from_numpy(grid_counts(pines_points(), n_grid))
        self.mean = math.log(len(pines_points())) - 0.5 * self.signal_variance
        self.length_scale = n_grid / self.inverse_length_scale

    def cholesky(self, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
        return lgcp_cholesky(self.n_grid, self.signal_variance, self.length_scale, dtype, str(device))

    def log_prob(self, f: torch.Tensor) -> torch.Tensor:
        chol = self.cholesky(f.dtype, f.device)
        white = torch.linalg.solve_triangular(chol, (f - self.mean).T, upper=False)  # (d, B)
        half_log_det = torch.log(torch.diagonal(self.cholesky(torch.float64))).sum().item()
        log_prior = -0.5 * (white**2).sum(0) - half_log_det - 0.5 * self.dim * LOG_2PI
        log_lik = (f * self.counts.to(f) - torch.exp(f) / self.dim).sum(-1)
        return log_prior + log_lik

    def score(self, f: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """-K^{-1} (f - mu) (two triangular solves with the cached Cholesky factor) + counts - e^f / d."""
        chol = self.cholesky(f.dtype, f.device)
        white = torch.linalg.solve_triangular(chol, (f - self.mean).T, upper=False)  # (d, B)
        prior = torch.linalg.solve_triangular(chol.T, white, upper=True).T
        return -prior + self.counts.to(f) - torch.exp(f) / self.dim


SAMPLING_TARGETS.update(
    {
        "sonar": sonar,
        "ionosphere": ionosphere,
        "german_credit": GermanCredit,
        "seeds": Seeds,
        "brownian": Brownian,
        "lgcp": LGCP,
    }
)
