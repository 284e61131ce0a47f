"""Level densities: how training draws noise levels, kept separate from the loss weight w(lambda).

Every density draws a batch of levels for a process (``sample(n, generator, process) -> Levels``, float64
on the CPU, deterministic given the ``torch.Generator``) and states its log-density in lambda = log SNR
(``log_prob(lam, process)``, -inf outside its support), which is what weightings are compared by:
the implied weight of a training objective is p(lambda) * w(lambda).

- ``uniform-t``: t ~ U(t_min, t_max) of the process; ``discrete=True``: the DDPM step n ~ U{0..T-1},
  t = (n + 1) / T (DDPM, flow matching).
- ``edm-lognormal``: ln s ~ N(p_mean, p_std^2), i.e. lambda ~ N(-2 p_mean, 4 p_std^2) (Karras et al. 2022).
- ``logit-normal`` (``sd3``): flow time t = sigmoid(loc + scale z), i.e. lambda = -2 logit(t) ~ N(-2 loc,
  4 scale^2) (Esser et al. 2024).
- ``uniform-logsnr``: lambda ~ U(lam_min, lam_max), clipped to the process's range (Kingma & Gao 2023).
- ``tabulated``: any density of lambda, constant on cells (``density_from_function``), e.g. one given as a formula.
- ``optimal``: adaptive, p(lambda) proportional to w(lambda) * (J_theta(lambda) - J*(lambda)), the weighted
  reducible loss of the model being trained (Xu et al. 2025; ``OptimalDensity``).

Adaptive densities (``adaptive = True``) are told the model's per-sample losses by the training loop through
``observe`` and keep a state (``state`` / ``load_state``, a dict of tensors) that goes into checkpoints; their
parameters stay frozen and the state lives in an explicit mutable object (``OptimalDensity.tracker``).

Densities given in lambda (edm-lognormal, logit-normal, uniform-logsnr) are truncated to the log-SNR range the
process reaches, so every level is a valid time of the process; for EDM's defaults that removes 2e-5 of the mass.
SD3's logit-normal is defined on the rectified-flow time; for other processes the same log-SNRs are used.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from diffloss.config import build, config_from_dict, config_to_dict, parse_spec
from diffloss.errors import DifflossError
from diffloss.levels import Levels
from diffloss.optimal_weight import OptimalWeightParams
from diffloss.process import Process, Tensorish, as_f64


def _uniform(n: int, generator: torch.Generator) -> torch.Tensor:
    """n uniforms in [0, 1), float64 on the CPU, drawn on the generator's device."""
    return torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device).cpu()


def abs_dlogsnr_dt(process: Process, t: torch.Tensor) -> torch.Tensor:
    """|d lambda / dt| at times ``t``: by autograd, or by central differences for tabulated (discrete) schedules."""
    with torch.enable_grad():
        tt = t.detach().clone().requires_grad_(True)
        lam = process.logsnr(tt)
        if lam.requires_grad:
            return torch.autograd.grad(lam.sum(), tt)[0].abs()
    h = 1e-7 * (process.t_max - process.t_min)
    lo, hi = (t - h).clamp(min=process.t_min), (t + h).clamp(max=process.t_max)
    return ((process.logsnr(hi) - process.logsnr(lo)) / (hi - lo)).abs()


@dataclass(frozen=True)
class LevelDensity(ABC):
    """A distribution of noise levels. Subclasses are frozen dataclasses whose fields are the parameters."""

    name: ClassVar[str]
    adaptive: ClassVar[bool] = False

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator, process: Process) -> Levels:
        """``n`` levels for ``process`` (float64, CPU), deterministic given ``generator``."""

    @abstractmethod
    def support(self, process: Process) -> tuple[float, float]:
        """(lowest, highest) log-SNR this density draws for ``process``."""

    @abstractmethod
    def _log_prob_inside(self, lam: torch.Tensor, process: Process) -> torch.Tensor: ...

    def log_prob(self, lam: Tensorish, process: Process) -> torch.Tensor:
        """log p(lambda), the density of log-SNR (per unit lambda); -inf outside the support."""
        lam = as_f64(lam)
        lo, hi = self.support(process)
        inside = (lam >= lo) & (lam <= hi)
        out = torch.full_like(lam, -math.inf)
        out[inside] = self._log_prob_inside(lam[inside], process)
        return out

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def observe(self, logsnr: torch.Tensor, x0_mse: torch.Tensor, process: Process) -> None:  # noqa: B027 (no-op default)
        """Adaptive densities: take the per-sample x0 MSE (B,) (unweighted, per-dimension mean) of a training
        batch at log-SNRs ``logsnr`` (B,). Fixed densities ignore it."""

    def state(self) -> dict[str, torch.Tensor]:
        """The state an adaptive density has accumulated (empty for fixed densities)."""
        return {}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore ``state()``."""
        if state:
            raise DifflossError(f"level density {self.name!r} keeps no state, got {sorted(state)}")


@dataclass(frozen=True)
class UniformT(LevelDensity):
    """t uniform on the process's time interval, or (``discrete``) the DDPM step uniform on {0, ..., T-1}.

    Continuous: ends of the interval where lambda is infinite (sigma = 0 at t = 0 for VP and flow, alpha = 0 at
    t = 1 for flow) are moved inward by ``eps * (t_max - t_min)``. Discrete: step n sits at t = (n + 1) / T
    (VP processes only); its ``log_prob`` is that of t uniform on [1/T, 1], the continuous limit."""

    name: ClassVar[str] = "uniform-t"
    discrete: bool = False
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if not 0 <= self.eps < 0.5:
            raise DifflossError(f"uniform-t needs 0 <= eps < 0.5, got {self.eps}")

    def _steps(self, process: Process) -> int:
        if not hasattr(process, "timestep_t"):
            raise DifflossError(
                f"uniform-t with discrete=true needs a process with T discrete steps (vp, vp-cosine); "
                f"process {process.name!r} is continuous: use uniform-t without discrete"
            )
        return process.T

    def t_interval(self, process: Process) -> tuple[float, float]:
        """The interval t is drawn from."""
        if self.discrete:
            return 1 / self._steps(process), 1.0
        lo, hi = process.t_min, process.t_max
        lam_lo_t, lam_hi_t = process.logsnr(torch.tensor([lo, hi], dtype=torch.float64)).tolist()
        shift = self.eps * (hi - lo)
        return lo + (0 if math.isfinite(lam_lo_t) else shift), hi - (0 if math.isfinite(lam_hi_t) else shift)

    def sample(self, n, generator, process):
        if self.discrete:
            steps = torch.randint(self._steps(process), (n,), generator=generator, device=generator.device).cpu()
            return Levels.from_t(process, process.timestep_t(steps), steps)
        lo, hi = self.t_interval(process)
        return Levels.from_t(process, lo + (hi - lo) * _uniform(n, generator))

    def support(self, process):
        lo, hi = self.t_interval(process)
        lam_hi, lam_lo = process.logsnr(torch.tensor([lo, hi], dtype=torch.float64)).tolist()
        return lam_lo, lam_hi

    def _log_prob_inside(self, lam, process):
        lo, hi = self.t_interval(process)
        return -math.log(hi - lo) - torch.log(abs_dlogsnr_dt(process, process.t_of_logsnr(lam)))


@dataclass(frozen=True)
class _NormalLogSNR(LevelDensity, ABC):
    """lambda ~ N(mean, std^2) truncated to the process's log-SNR range (sampled by inverse CDF)."""

    @abstractmethod
    def mean_std(self) -> tuple[float, float]:
        """(mean, std) of lambda before truncation."""

    def support(self, process):
        return process.logsnr_range()

    def _cdf_bounds(self, process: Process) -> tuple[torch.Tensor, torch.Tensor]:
        m, sd = self.mean_std()
        lo, hi = process.logsnr_range()
        return torch.special.ndtr(torch.tensor((lo - m) / sd)), torch.special.ndtr(torch.tensor((hi - m) / sd))

    def sample(self, n, generator, process):
        m, sd = self.mean_std()
        a, b = self._cdf_bounds(process)
        tiny = torch.finfo(torch.float64).tiny
        u = (a + (b - a) * _uniform(n, generator)).clamp(tiny, 1 - 2**-53)
        lo, hi = process.logsnr_range()
        return Levels.from_logsnr(process, (m + sd * torch.special.ndtri(u)).clamp(lo, hi))

    def _log_prob_inside(self, lam, process):
        m, sd = self.mean_std()
        a, b = self._cdf_bounds(process)
        z = (lam - m) / sd
        return -0.5 * z**2 - math.log(sd * math.sqrt(2 * math.pi)) - torch.log(b - a)


@dataclass(frozen=True)
class EDMLogNormal(_NormalLogSNR):
    """EDM's training density: ln s ~ N(p_mean, p_std^2) with s = sigma / alpha (Karras et al. 2022)."""

    name: ClassVar[str] = "edm-lognormal"
    p_mean: float = -1.2
    p_std: float = 1.2

    def __post_init__(self) -> None:
        if self.p_std <= 0:
            raise DifflossError(f"edm-lognormal needs p_std > 0, got {self.p_std}")

    def mean_std(self):
        return -2 * self.p_mean, 2 * self.p_std


@dataclass(frozen=True)
class LogitNormal(_NormalLogSNR):
    """SD3's logit-normal flow time: t = sigmoid(loc + scale * z), z ~ N(0, 1) (Esser et al. 2024)."""

    name: ClassVar[str] = "logit-normal"
    loc: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise DifflossError(f"logit-normal needs scale > 0, got {self.scale}")

    def mean_std(self):
        return -2 * self.loc, 2 * self.scale


@dataclass(frozen=True)
class UniformLogSNR(LevelDensity):
    """lambda ~ U(lam_min, lam_max), clipped to the log-SNR range of the process."""

    name: ClassVar[str] = "uniform-logsnr"
    lam_min: float = -10.0
    lam_max: float = 10.0

    def __post_init__(self) -> None:
        if not self.lam_min < self.lam_max:
            raise DifflossError(f"uniform-logsnr needs lam_min < lam_max, got {self.lam_min}, {self.lam_max}")

    def support(self, process):
        lo, hi = process.logsnr_range()
        a, b = max(lo, self.lam_min), min(hi, self.lam_max)
        if not a < b:
            raise DifflossError(
                f"uniform-logsnr on [{self.lam_min:g}, {self.lam_max:g}] misses the log-SNR range "
                f"[{lo:.4g}, {hi:.4g}] of process {process.name!r}; pick lam_min, lam_max inside it"
            )
        return a, b

    def sample(self, n, generator, process):
        a, b = self.support(process)
        return Levels.from_logsnr(process, a + (b - a) * _uniform(n, generator))

    def _log_prob_inside(self, lam, process):
        a, b = self.support(process)
        return torch.full_like(lam, -math.log(b - a))


@dataclass(frozen=True)
class Tabulated(LevelDensity):
    """A density of lambda that is constant on cells: ``edges`` (K + 1 increasing log-SNRs) and ``log_weights``
    (K unnormalized log-densities). Serializable stand-in for any density of lambda (``density_from_function``)."""

    name: ClassVar[str] = "tabulated"
    edges: tuple[float, ...] = ()
    log_weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        e, w = self.edges, self.log_weights
        if len(e) < 2 or len(e) != len(w) + 1:
            raise DifflossError("tabulated density needs K + 1 edges and K log_weights (K >= 1)")
        if not all(math.isfinite(v) for v in (*e, *w)) or any(b <= a for a, b in zip(e, e[1:])):
            raise DifflossError("tabulated density needs finite, strictly increasing edges and finite log_weights")

    def _cells(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(edges, probability of each cell)."""
        edges = torch.tensor(self.edges, dtype=torch.float64)
        logp = torch.tensor(self.log_weights, dtype=torch.float64) + torch.log(edges.diff())
        return edges, torch.softmax(logp, 0)

    def support(self, process):
        lo, hi = process.logsnr_range()
        if self.edges[0] < lo or self.edges[-1] > hi:
            raise DifflossError(
                f"tabulated density spans log-SNR [{self.edges[0]:g}, {self.edges[-1]:g}] but process "
                f"{process.name!r} reaches only [{lo:.4g}, {hi:.4g}]; tabulate inside that range"
            )
        return self.edges[0], self.edges[-1]

    def sample(self, n, generator, process):
        self.support(process)
        edges, p = self._cells()
        cdf = torch.cat([torch.zeros(1, dtype=torch.float64), p.cumsum(0)])
        u = _uniform(n, generator) * cdf[-1]
        i = (torch.searchsorted(cdf, u, right=True) - 1).clamp(0, len(p) - 1)
        frac = ((u - cdf[i]) / p[i]).clamp(0, 1)
        return Levels.from_logsnr(process, edges[i] + frac * (edges[i + 1] - edges[i]))

    def _log_prob_inside(self, lam, process):
        edges, p = self._cells()
        i = (torch.searchsorted(edges, lam, right=True) - 1).clamp(0, len(p) - 1)
        return torch.log(p[i] / edges.diff()[i])


def density_from_function(
    log_prob: Callable[[torch.Tensor], torch.Tensor], lam_min: float, lam_max: float, cells: int = 512
) -> Tabulated:
    """Any density of lambda, given as an (unnormalized) log-density function, tabulated at cell midpoints."""
    if cells < 1 or not lam_min < lam_max:
        raise DifflossError("density_from_function needs cells >= 1 and lam_min < lam_max")
    edges = torch.linspace(lam_min, lam_max, cells + 1, dtype=torch.float64)
    values = as_f64(log_prob((edges[1:] + edges[:-1]) / 2))
    return Tabulated(tuple(edges.tolist()), tuple(values.tolist()))


class ModelLossTracker:
    """The mutable part of ``OptimalDensity``: the model's current loss J_theta in each of ``cells`` cells.

    ``jtheta`` (float64) is an exponential moving average of the batch-mean per-sample x0 MSE (unweighted,
    per-dimension mean) of the samples that fell in the cell, J_k <- J_k + ema_rate * (mean - J_k), the first
    observation taken as is; ``seen`` (bool) marks the cells observed at least once. ``update`` folds in one
    batch; ``state`` / ``load_state`` are the two tensors that go into checkpoints (keys ``jtheta``, ``seen``)."""

    def __init__(self, cells: int, ema_rate: float) -> None:
        self.ema_rate = ema_rate
        self.jtheta = torch.zeros(cells, dtype=torch.float64)
        self.seen = torch.zeros(cells, dtype=torch.bool)

    def update(self, cell: torch.Tensor, x0_mse: torch.Tensor) -> None:
        """Fold in a batch: ``cell`` (B,) int64 cell indices, ``x0_mse`` (B,) per-sample x0 MSE of those samples."""
        cells = len(self.jtheta)
        count = torch.zeros(cells, dtype=torch.float64).index_add_(0, cell, torch.ones_like(cell, dtype=torch.float64))
        total = torch.zeros(cells, dtype=torch.float64).index_add_(0, cell, x0_mse.to(torch.float64))
        hit = count > 0
        mean = total[hit] / count[hit]
        old = self.jtheta[hit]
        self.jtheta[hit] = torch.where(self.seen[hit], old + self.ema_rate * (mean - old), mean)
        self.seen.logical_or_(hit)

    def state(self) -> dict[str, torch.Tensor]:
        return {"jtheta": self.jtheta.clone(), "seen": self.seen.clone()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"jtheta", "seen"} or state["jtheta"].shape != self.jtheta.shape:
            raise DifflossError(f"the optimal density's saved state does not fit {len(self.jtheta)} buckets")
        self.jtheta.copy_(state["jtheta"])
        self.seen.copy_(state["seen"])


@dataclass(frozen=True)
class OptimalDensity(OptimalWeightParams, LevelDensity):
    """Xu et al.'s adaptive level density: p(lambda) proportional to w(lambda) * (J_theta(lambda) - J*(lambda)).

    The parameters are frozen: w and J* are those of ``diffloss.optimal_weight.OptimalWeightParams`` (the same
    parameters as the ``optimal`` weighting), plus ``ema_rate``, ``buckets`` and ``explore``. The one mutable
    part is ``tracker``, a ``ModelLossTracker`` of J_theta per cell created empty with the density (not a parameter:
    it is not in ``to_dict``, and ``dataclasses.replace`` starts a new one); ``observe`` updates it and
    ``state`` / ``load_state`` checkpoint it.

    The density is constant on ``buckets`` equal cells of lambda spanning the J* table (clipped to the process's
    range), sampled uniformly within a cell. Cell k gets mass proportional to g_k = w(lambda_k) *
    max(J_k - J*(lambda_k), 0) at the cell midpoint lambda_k; a cell never observed gets the largest g of the
    observed ones (all cells equal before any observation). The result is mixed with the uniform density on the
    cells, weight ``explore``, so that every cell keeps being visited and its J_k stays current."""

    name: ClassVar[str] = "optimal"
    adaptive: ClassVar[bool] = True
    ema_rate: float = 0.02
    buckets: int = 32
    explore: float = 0.05
    tracker: ModelLossTracker = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.ema_rate <= 1 or not 0 < self.explore <= 1 or self.buckets < 1:
            raise DifflossError(
                f"optimal density needs 0 < ema_rate <= 1, 0 < explore <= 1 and buckets >= 1, got "
                f"ema_rate={self.ema_rate}, explore={self.explore}, buckets={self.buckets}"
            )
        object.__setattr__(self, "tracker", ModelLossTracker(self.buckets, self.ema_rate))  # frozen: set once, here

    def support(self, process):
        lo, hi = process.logsnr_range()
        a, b = max(lo, self.jstar_logsnr[0]), min(hi, self.jstar_logsnr[-1])
        if not a < b:
            raise DifflossError(
                f"the J* table spans log-SNR [{self.jstar_logsnr[0]:g}, {self.jstar_logsnr[-1]:g}], outside the "
                f"range [{lo:.4g}, {hi:.4g}] of process {process.name!r}; compute J* at this process's levels"
            )
        return a, b

    def edges(self, process: Process) -> torch.Tensor:
        """The ``buckets`` + 1 cell edges in lambda."""
        return torch.linspace(*self.support(process), self.buckets + 1, dtype=torch.float64)

    def cell_mass(self, process: Process) -> torch.Tensor:
        """Probability of each cell under the tracker's current J_theta (sums to 1)."""
        edges = self.edges(process)
        mid = (edges[1:] + edges[:-1]) / 2
        jtheta, seen = self.tracker.jtheta, self.tracker.seen
        g = self.optimal_weight(mid) * (jtheta - self.optimal_loss(mid)).clamp(min=0)
        if seen.any():
            g = torch.where(seen, g, g[seen].max())
        g = g / g.sum() if g.sum() > 0 else torch.full_like(g, 1 / self.buckets)
        return (1 - self.explore) * g + self.explore / self.buckets

    def _table(self, process: Process) -> Tabulated:
        return Tabulated(tuple(self.edges(process).tolist()), tuple(self.cell_mass(process).log().tolist()))

    def sample(self, n, generator, process):
        return self._table(process).sample(n, generator, process)

    def _log_prob_inside(self, lam, process):
        return self._table(process)._log_prob_inside(lam, process)

    def observe(self, logsnr, x0_mse, process):
        """``tracker.update`` with the cells of ``logsnr``; levels outside the cells are ignored."""
        edges = self.edges(process)
        inside = (logsnr >= edges[0]) & (logsnr <= edges[-1])
        cell = (torch.searchsorted(edges, logsnr[inside], right=True) - 1).clamp(0, self.buckets - 1)
        self.tracker.update(cell, x0_mse[inside])

    def state(self):
        return self.tracker.state()

    def load_state(self, state):
        self.tracker.load_state(state)


DENSITIES: dict[str, type[LevelDensity]] = {
    c.name: c for c in (UniformT, EDMLogNormal, LogitNormal, UniformLogSNR, Tabulated, OptimalDensity)
}
_ALIASES = {
    "uniform": "uniform-t",
    "lognormal": "edm-lognormal",
    "sd3": "logit-normal",
    "uniform-lambda": "uniform-logsnr",
}


def get_density(name: str, **params: Any) -> LevelDensity:
    """A level density by name (``uniform-t``, ``edm-lognormal``, ``logit-normal``/``sd3``, ``uniform-logsnr``,
    ``tabulated``, ``optimal``) and parameters; string parameter values are converted to the parameter's type."""
    return build(DENSITIES, "level density", name, params, _ALIASES)


def density_from_dict(d: dict[str, Any]) -> LevelDensity:
    """Inverse of ``LevelDensity.to_dict`` (also reads ``Process.default_density()``)."""
    return config_from_dict(DENSITIES, "level density", d, _ALIASES)


def density_from_spec(spec: str, process: Process | None = None) -> LevelDensity:
    """``"name[:key=value,...]"``; ``"default"`` is the process's usual training density."""
    name, params = parse_spec(spec)
    if name == "default":
        if process is None or params:
            raise DifflossError("the 'default' density takes no parameters and needs a process")
        return density_from_dict(process.default_density())
    return get_density(name, **params)
