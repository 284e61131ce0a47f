"""Noise processes x_t = alpha(t) * x0 + sigma(t) * eps.

Every process is a *family* (how alpha and sigma depend on the log-SNR lambda) plus a *schedule* (how
lambda depends on time t). Families:

- ``vp``:   alpha^2 + sigma^2 = 1, so alpha = sqrt(sigmoid(lambda)), sigma = sqrt(sigmoid(-lambda));
- ``ve``:   alpha = 1, sigma = exp(-lambda / 2);
- ``flow``: alpha + sigma = 1, so alpha = sigmoid(lambda / 2), sigma = sigmoid(-lambda / 2).

In every family the noise-to-signal ratio s = sigma / alpha = exp(-lambda / 2) is the EDM/VE "sigma".
All functions take floats, arrays or tensors and return float64 tensors. Processes are frozen dataclasses
that round-trip through ``to_dict`` / ``process_from_dict`` (plain JSON types).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch

from diffloss.config import build, parse_spec
from diffloss.errors import DifflossError, unknown_name

Tensorish = float | np.ndarray | torch.Tensor


def as_f64(x: Tensorish) -> torch.Tensor:
    """``x`` as a float64 tensor (no copy when it already is one)."""
    return torch.as_tensor(x, dtype=torch.float64)


def alpha_sigma_of_logsnr(family: str, lam: Tensorish) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha and sigma of a process family at log-SNR ``lam`` (stable at +-inf)."""
    lam = as_f64(lam)
    if family == "vp":
        return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()
    if family == "ve":
        return torch.ones_like(lam), torch.exp(-lam / 2)
    if family == "flow":
        return torch.sigmoid(lam / 2), torch.sigmoid(-lam / 2)
    raise unknown_name("process family", family, ["vp", "ve", "flow"])


@dataclass(frozen=True)
class Process(ABC):
    """A noise process. Subclasses define ``alpha_sigma(t)``, ``t_of_logsnr(lam)`` and the time domain."""

    name: ClassVar[str]
    family: ClassVar[str]

    @property
    @abstractmethod
    def t_min(self) -> float: ...

    @property
    @abstractmethod
    def t_max(self) -> float: ...

    @abstractmethod
    def alpha_sigma(self, t: Tensorish) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha(t), sigma(t)) as float64 tensors, on t's device when ``any_device``, else t must be on the CPU."""

    @property
    def any_device(self) -> bool:
        """Whether ``alpha_sigma`` computes on any device (True) or on the CPU only (a table lookup in NumPy)."""
        return True

    @abstractmethod
    def _t_of_logsnr(self, lam: torch.Tensor) -> torch.Tensor: ...

    # ---- derived quantities -------------------------------------------------------------------------
    def alpha(self, t: Tensorish) -> torch.Tensor:
        return self.alpha_sigma(t)[0]

    def sigma(self, t: Tensorish) -> torch.Tensor:
        return self.alpha_sigma(t)[1]

    def logsnr(self, t: Tensorish) -> torch.Tensor:
        """lambda(t) = log(alpha^2 / sigma^2); +inf where sigma = 0, -inf where alpha = 0."""
        a, s = self.alpha_sigma(t)
        return 2 * (torch.log(a) - torch.log(s))

    def nsr(self, t: Tensorish) -> torch.Tensor:
        """Noise-to-signal ratio s(t) = sigma / alpha = exp(-lambda / 2)."""
        a, s = self.alpha_sigma(t)
        return s / a

    def logsnr_range(self) -> tuple[float, float]:
        """(lambda(t_max), lambda(t_min)): the log-SNRs this process reaches, lowest first."""
        lo, hi = self.logsnr(torch.tensor([self.t_max, self.t_min], dtype=torch.float64)).tolist()
        return lo, hi

    def t_of_logsnr(self, lam: Tensorish) -> torch.Tensor:
        """The time at which the process has log-SNR ``lam``; raises if ``lam`` is outside its range."""
        lam = as_f64(lam)
        lo, hi = self.logsnr_range()
        tol = 1e-9 * max(1.0, abs(lo), abs(hi) if math.isfinite(hi) else 1.0)
        if torch.isnan(lam).any() or (lam < lo - tol).any() or (lam > hi + tol).any():
            bad = lam[torch.isnan(lam) | (lam < lo - tol) | (lam > hi + tol)][0].item()
            raise DifflossError(
                f"log-SNR {bad:g} is outside the range [{lo:.4g}, {hi:.4g}] of process {self.name!r}; "
                f"pick levels inside it (noise-to-signal ratio s in [{math.exp(-hi / 2):.4g}, "
                f"{math.exp(-lo / 2):.4g}])"
            )
        return self._t_of_logsnr(lam.clamp(lo, hi)).clamp(self.t_min, self.t_max)

    def t_of_nsr(self, s: Tensorish) -> torch.Tensor:
        """The time at which sigma / alpha = ``s`` (s > 0)."""
        return self.t_of_logsnr(-2 * torch.log(as_f64(s)))

    def alpha_sigma_of_logsnr(self, lam: Tensorish) -> tuple[torch.Tensor, torch.Tensor]:
        return alpha_sigma_of_logsnr(self.family, lam)

    def default_density(self) -> dict[str, Any]:
        """The level density this process is usually trained with (a weighting-registry config)."""
        return {"name": "uniform-t"}

    # ---- serialization ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    def __str__(self) -> str:
        params = ", ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))
        return f"{self.name}({params})"


@dataclass(frozen=True)
class VE(Process):
    """Variance exploding: alpha = 1, sigma(t) = sigma_min * (sigma_max / sigma_min)^t, t in [0, 1]."""

    name: ClassVar[str] = "ve"
    family: ClassVar[str] = "ve"
    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise DifflossError(f"VE needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    t_min = property(lambda self: 0.0)
    t_max = property(lambda self: 1.0)

    def alpha_sigma(self, t):
        t = as_f64(t)
        return torch.ones_like(t), self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def _t_of_logsnr(self, lam):
        return (-lam / 2 - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)


@dataclass(frozen=True)
class EDM(Process):
    """Karras et al. (2022): alpha = 1, sigma = t, t in [sigma_min, sigma_max].

    Trained with ln sigma ~ N(p_mean, p_std^2); sigma_data is the data scale of its preconditioning."""

    name: ClassVar[str] = "edm"
    family: ClassVar[str] = "ve"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max or self.sigma_data <= 0 or self.p_std <= 0:
            raise DifflossError("EDM needs 0 < sigma_min < sigma_max, sigma_data > 0 and p_std > 0")

    t_min = property(lambda self: self.sigma_min)
    t_max = property(lambda self: self.sigma_max)

    def alpha_sigma(self, t):
        t = as_f64(t)
        return torch.ones_like(t), t.clone()

    def _t_of_logsnr(self, lam):
        return torch.exp(-lam / 2)

    def default_density(self) -> dict[str, Any]:
        return {"name": "edm-lognormal", "p_mean": self.p_mean, "p_std": self.p_std}


@lru_cache(maxsize=16)
def _discrete_log_alpha_bar(kind: str, T: int, a: float, b: float, max_beta: float) -> np.ndarray:
    """log alpha_bar on the grid t_k = k / T, k = 0..T (alpha_bar_0 = 1), built from DDPM-style betas."""
    if kind == "linear":
        betas = np.linspace(a, b, T, dtype=np.float64)
    else:  # cosine, as diffusers' "squaredcos_cap_v2": beta_i = min(1 - f((i+1)/T) / f(i/T), max_beta)
        f = lambda u: np.cos((u + a) / (1 + a) * np.pi / 2) ** 2  # noqa: E731
        i = np.arange(T, dtype=np.float64)
        betas = np.minimum(1 - f((i + 1) / T) / f(i / T), max_beta)
    out = np.zeros(T + 1)
    out[1:] = np.cumsum(np.log1p(-betas))
    return out


@dataclass(frozen=True)
class _VP(Process, ABC):
    """Shared machinery of the VP processes: log alpha_bar(t) defines everything.

    With ``discrete=True`` the process is the DDPM chain of T steps: training step n (0-based, as in
    diffusers) sits at t = (n + 1) / T, and log alpha_bar is linear in t between grid points, so that
    alpha(t)^2 equals diffusers' ``alphas_cumprod[n]`` exactly at the grid.
    """

    family: ClassVar[str] = "vp"
    T: int = 1000
    discrete: bool = False

    t_min = property(lambda self: 0.0)
    t_max = property(lambda self: 1.0)

    @abstractmethod
    def _table(self) -> np.ndarray: ...

    @abstractmethod
    def _log_alpha_bar_continuous(self, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _t_of_neg_log_alpha_bar_continuous(self, c: torch.Tensor) -> torch.Tensor: ...

    def log_alpha_bar(self, t: Tensorish) -> torch.Tensor:
        t = as_f64(t)
        if not self.discrete:
            return self._log_alpha_bar_continuous(t)
        grid = np.linspace(0.0, 1.0, self.T + 1)
        return torch.from_numpy(np.interp(t.numpy(), grid, self._table())).reshape(t.shape)

    def alphas_cumprod(self) -> torch.Tensor:
        """alpha_bar at the T discrete training steps (diffusers' ``alphas_cumprod``)."""
        return torch.from_numpy(np.exp(self._table()[1:]))

    def timestep_t(self, n: Tensorish) -> torch.Tensor:
        """Continuous time of 0-based discrete step ``n``: t = (n + 1) / T."""
        return (as_f64(n) + 1) / self.T

    @property
    def any_device(self) -> bool:
        return not self.discrete

    def alpha_sigma(self, t):
        # log alpha_bar <= 0; clamping stops a last-ulp positive value at t = 0 (libm-dependent) from giving sigma = nan
        lab = self.log_alpha_bar(t).clamp(max=0.0)
        return torch.exp(lab / 2), torch.sqrt(-torch.expm1(lab))

    def _t_of_logsnr(self, lam):
        c = torch.nn.functional.softplus(-lam)  # = -log alpha_bar
        if not self.discrete:
            return self._t_of_neg_log_alpha_bar_continuous(c)
        grid = np.linspace(0.0, 1.0, self.T + 1)
        return torch.from_numpy(np.interp(c.numpy(), -self._table(), grid)).reshape(c.shape)


@dataclass(frozen=True)
class VPLinear(_VP):
    """DDPM's linear betas (beta_start -> beta_end over T steps). Continuous time uses
    beta(t) = T * (beta_start + t * (beta_end - beta_start)), i.e. beta_min = 0.1, beta_max = 20 (Song et al.)."""

    name: ClassVar[str] = "vp"
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self) -> None:
        if not 0 < self.beta_start < self.beta_end < 1 or self.T < 2:
            raise DifflossError("VP-linear needs 0 < beta_start < beta_end < 1 and T >= 2")

    def _table(self):
        return _discrete_log_alpha_bar("linear", self.T, self.beta_start, self.beta_end, 1.0)

    def _log_alpha_bar_continuous(self, t):
        b0, b1 = self.T * self.beta_start, self.T * self.beta_end
        return -(b0 * t + 0.5 * (b1 - b0) * t**2)

    def _t_of_neg_log_alpha_bar_continuous(self, c):
        b0, b1 = self.T * self.beta_start, self.T * self.beta_end
        return 2 * c / (b0 + torch.sqrt(b0**2 + 2 * (b1 - b0) * c))  # stable root of the quadratic


@dataclass(frozen=True)
class VPCosine(_VP):
    """Nichol & Dhariwal's cosine schedule: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t + s) / (1 + s) * pi / 2).
    Discrete mode clips betas at ``max_beta`` like diffusers' ``squaredcos_cap_v2``."""

    name: ClassVar[str] = "vp-cosine"
    s: float = 0.008
    max_beta: float = 0.999

    def __post_init__(self) -> None:
        if self.s < 0 or not 0 < self.max_beta <= 1 or self.T < 2:
            raise DifflossError("VP-cosine needs s >= 0, 0 < max_beta <= 1 and T >= 2")

    def _table(self):
        return _discrete_log_alpha_bar("cosine", self.T, self.s, 0.0, self.max_beta)

    def _log_alpha_bar_continuous(self, t):
        ang = lambda u: (u + self.s) / (1 + self.s) * (math.pi / 2)  # noqa: E731
        return 2 * (torch.log(torch.cos(ang(t))) - math.log(math.cos(ang(0.0))))

    def _t_of_neg_log_alpha_bar_continuous(self, c):
        cos0 = math.cos(self.s / (1 + self.s) * math.pi / 2)
        return torch.acos(cos0 * torch.exp(-c / 2)) * (2 / math.pi) * (1 + self.s) - self.s


@dataclass(frozen=True)
class Flow(Process):
    """Rectified flow / flow matching: alpha = 1 - t, sigma = t, t in [0, 1]."""

    name: ClassVar[str] = "flow"
    family: ClassVar[str] = "flow"

    t_min = property(lambda self: 0.0)
    t_max = property(lambda self: 1.0)

    def alpha_sigma(self, t):
        t = as_f64(t)
        return 1 - t, t.clone()

    def _t_of_logsnr(self, lam):
        return torch.sigmoid(-lam / 2)


PROCESSES: dict[str, type[Process]] = {c.name: c for c in (VE, VPLinear, VPCosine, EDM, Flow)}
_ALIASES = {"vp-linear": "vp", "rectified-flow": "flow", "rf": "flow"}


def get_process(name: str, **params: Any) -> Process:
    """A process by name (``ve``, ``vp`` / ``vp-linear``, ``vp-cosine``, ``edm``, ``flow``) and parameters (strings
    from a command line are coerced to the parameter's type)."""
    return build(PROCESSES, "process", name, params, _ALIASES)


def process_from_spec(spec: str) -> Process:
    """``"NAME[:key=value,...]"``, e.g. ``"vp:discrete=true"`` (DDPM's T = 1000 discrete chain)."""
    name, params = parse_spec(spec)
    return get_process(name, **params)


def process_from_dict(d: dict[str, Any]) -> Process:
    """Inverse of ``Process.to_dict``."""
    d = dict(d)
    if "name" not in d:
        raise DifflossError("a process config needs a 'name' key")
    return get_process(d.pop("name"), **d)
