"""DIS, DBS and CMCD as one discretized bridge between a learnable Gaussian prior and a target.

Time runs from t_0 = 0 (prior) to t_K = 1 (target) in K steps of h = 1/K. All three samplers share

    forward kernel   F_k(x_{k+1} | x_k)  = N(A(x_k)     + h * fwd_k(x_k),         V)
    backward kernel  B_k(x_k | x_{k+1})  = N(A(x_{k+1}) + h * bwd_{k+1}(x_{k+1}), V)

with A(x) = mu + rho * (x - mu), rho = exp(-h D / (2 s^2)), V = s^2 (1 - rho^2), per dimension. Here N(mu, s^2) is
the prior and D = sigma^2 the learned per-dimension diffusion coefficient. (A, V) is the exact one-step transition
of the Ornstein-Uhlenbeck process dX = (D/2) grad log p_0(X) dt + sigma dW, which leaves the prior invariant and is
reversible; the remaining drifts are added by Euler-Maruyama. So with zero control and target = Z * prior the
forward and backward paths have equal densities and R = -log Z exactly (not only as K -> infinity).

    DIS  : fwd = D u(x, t),                       bwd = 0 (the fixed noising reference)
    DBS  : fwd = D u(x, t),                       bwd = D v(x, t)          (u, v from one or two networks)
    CMCD : fwd = D (beta_t/2 g(x) + u(x, t)),     bwd = D (beta_t/2 g(x) - u(x, t))

with g = grad log p~ - grad log p_0, so that the uncontrolled CMCD drift is (D/2) grad log pi_beta of the annealed
path pi_beta ~ p_0^(1-beta) p~^beta, and beta_0 = 0 < beta_1 < ... < beta_K = 1 learned (softmax increments).
With ``score_gate`` the controls u (and v) also get a term c(t) * grad log p~(x), for CMCD c(t) * grad log pi_beta(x).
With ``annealed_gate`` DIS and DBS gate the annealed score grad log pi_beta too, on the fixed linear schedule
beta_k = k / K (they learn no schedule; the reference's DBS runs gate it with ``--Interpol_lr 0``, i.e. fixed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from diffloss.bridge.networks import ControlNet, NetworkPair
from diffloss.bridge.pisnet import PisNet
from diffloss.bridge.targets.base import SamplingTarget
from diffloss.errors import DifflossError, unknown_name
from diffloss.gaussian import gaussian_log_pdf

BRIDGE_SAMPLERS = ("dis", "dbs", "cmcd")
CONTROL_NETWORKS = ("mlp", "pis")  # diffloss.bridge.networks.ControlNet, diffloss.bridge.pisnet.PisNet
# Detached-path training simulates first and computes the path densities afterwards, CHUNK_ROWS states per network
# call, for batches up to TWO_PASS_MAX_BATCH (``simulate``). Measured on GMM40, CMCD, K = 128, pis network, 1 thread,
# steps per CPU-second (two-pass vs step by step): batch 64 11-12 vs 5.5, 256 4.2 vs 3.6, 2000 0.70 vs 0.77.
TWO_PASS_MAX_BATCH = 512
CHUNK_ROWS = 16384


@dataclass(frozen=True)
class SamplerConfig:
    """Everything that defines a sampler's architecture; JSON-serializable with ``to_dict``/``from_dict``.

    ``init_sigma`` is the initial diffusion coefficient sigma, the same in every dimension (1 as in the reference
    implementations; CMCD's Langevin step sigma^2 / (2K) must stay below 2 / lambda_max of -grad^2 log p~, see
    ``diffloss.bridge.config.default_init_sigma``). ``learn_sigma`` / ``learn_prior`` switch learning them off.
    ``score_gate`` gives the control network the score as a gated input (``diffloss.bridge.networks``): the target's
    grad log p~ for DIS/DBS, the annealed grad log pi_beta for CMCD, zero-gated at initialisation. It is
    differentiated like any other function of the state, so rKL-R's reparameterized gradient stays exact (the
    reference implementations stop its gradient, which biases that estimator).

    ``network`` is the control network: "mlp" (``ControlNet``: ``hidden`` widths, ``time_features`` sinusoidal
    features) or "pis" (``PisNet``, the reference's shape: ``hidden`` = L equal widths w, its n_hidden and
    num_layers; ``time_features`` unused, it has 2w Fourier features). Configs written before it load as "mlp".

    ``dbs_networks`` (DBS only): 1, one network with 2 * dim outputs for both drifts (the default), or 2, a separate
    forward and backward network (``diffloss.bridge.networks.NetworkPair``, the reference's DBS). ``annealed_gate``
    (DIS/DBS with ``score_gate``): gate the annealed score on the linear schedule instead of the target score (CMCD
    always gates its annealed score).
    """

    sampler: str
    dim: int
    steps: int = 128
    hidden: tuple[int, ...] = (64, 64)
    time_features: int = 32
    init_std: float = 1.0
    init_sigma: float = 1.0
    learn_sigma: bool = True
    learn_prior: bool = True
    score_gate: bool = False
    network: str = "mlp"
    dbs_networks: int = 1
    annealed_gate: bool = False

    def __post_init__(self) -> None:
        if self.sampler not in BRIDGE_SAMPLERS:
            raise unknown_name("sampler", self.sampler, BRIDGE_SAMPLERS)
        if self.steps < 1:
            raise DifflossError(f"--steps must be >= 1 (the number of Euler-Maruyama steps), got {self.steps}")
        if self.dim < 1:
            raise DifflossError(f"dimension must be >= 1, got {self.dim}")
        if not (self.init_std > 0 and math.isfinite(self.init_std)):
            raise DifflossError(f"--init-std must be a positive number, got {self.init_std}")
        if not (self.init_sigma > 0 and math.isfinite(self.init_sigma)):
            raise DifflossError(f"--init-sigma must be a positive number, got {self.init_sigma}")
        if not self.hidden or min(self.hidden) < 1:
            raise DifflossError(f"--hidden must be positive layer widths like 64,64, got {self.hidden}")
        if self.network not in CONTROL_NETWORKS:
            raise unknown_name("network", self.network, CONTROL_NETWORKS)
        if self.network == "pis" and len(set(self.hidden)) > 1:
            raise DifflossError(f"--network pis needs equal --hidden widths (n_hidden x num_layers), got {self.hidden}")
        if self.dbs_networks not in (1, 2) or (self.dbs_networks == 2 and self.sampler != "dbs"):
            raise DifflossError(f"--dbs-networks must be 1 or 2, and 2 only for --sampler dbs, got {self.dbs_networks}")
        if self.annealed_gate and not (self.score_gate and self.sampler != "cmcd"):
            raise DifflossError("--annealed-gate needs --score-gate and --sampler dis or dbs (cmcd always anneals)")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplerConfig:
        return cls(**{**d, "hidden": tuple(d["hidden"])})


class BridgeSampler(nn.Module):
    """Learnable prior N(mu, s^2), diffusion coefficient sigma, control network and (CMCD) annealing schedule."""

    def __init__(self, cfg: SamplerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.prior_mean = nn.Parameter(torch.zeros(d), requires_grad=cfg.learn_prior)
        self.prior_log_std = nn.Parameter(torch.full((d,), math.log(cfg.init_std)), requires_grad=cfg.learn_prior)
        self.log_sigma = nn.Parameter(torch.full((d,), math.log(cfg.init_sigma)), requires_grad=cfg.learn_sigma)
        if cfg.dbs_networks == 2:
            self.net = NetworkPair(self._control_net(d), self._control_net(d))
        else:
            self.net = self._control_net(2 * d if cfg.sampler == "dbs" else d)
        if cfg.sampler == "cmcd":
            self.beta_logits = nn.Parameter(torch.zeros(cfg.steps))

    def _control_net(self, out: int) -> nn.Module:
        """A control network of ``cfg.network`` with ``out`` outputs."""
        cfg = self.cfg
        if cfg.network == "pis":
            return PisNet(cfg.dim, out, cfg.hidden[0], len(cfg.hidden), cfg.steps, cfg.score_gate)
        return ControlNet(cfg.dim, out, cfg.hidden, cfg.time_features, cfg.score_gate)

    @property
    def steps(self) -> int:
        return self.cfg.steps

    def time_grid(self) -> torch.Tensor:
        """The times t_k = k / K, k = 0..K, (K+1,), each the float k / K rounded once to the parameters' dtype."""
        p = self.prior_mean
        return torch.tensor([k / self.steps for k in range(self.steps + 1)], dtype=p.dtype, device=p.device)

    def betas(self) -> torch.Tensor:
        """Annealing schedule beta_0..beta_K, (K+1,), from 0 to 1: CMCD's learned one (starts linear), else the
        linear t_k = k / K."""
        if self.cfg.sampler != "cmcd":
            return self.time_grid()
        inc = torch.softmax(self.beta_logits, 0)
        return torch.cat([inc.new_zeros(1), torch.cumsum(inc, 0)]).clamp(max=1.0)

    def prior_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; mu, diag(s^2)), (B, d) -> (B,)."""
        return gaussian_log_pdf(x, self.prior_mean, 2 * self.prior_log_std, sum_last=True)

    def sample_prior(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Reparameterized prior draws mu + s * z, (n, d)."""
        z = torch.randn(
            n, self.cfg.dim, generator=generator, dtype=self.prior_mean.dtype, device=self.prior_mean.device
        )
        return self.prior_mean + torch.exp(self.prior_log_std) * z

    def reference_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(rho, log V) per dimension: the exact one-step OU transition that keeps the prior invariant."""
        h = 1.0 / self.steps
        rate = h * torch.exp(2 * self.log_sigma - 2 * self.prior_log_std)  # h D / s^2
        return torch.exp(-rate / 2), 2 * self.prior_log_std + torch.log(-torch.expm1(-rate))

    def drifts(
        self,
        x: torch.Tensor,
        row: torch.Tensor,
        g: torch.Tensor | None = None,
        beta: torch.Tensor | None = None,
        score: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(fwd_k(x), bwd_k(x)) at states x (B, d) of time index k, ``row`` the (1, F) row k of the network's
        ``time_table`` (or x (T, B, d) of T times with their rows (T, 1, F)). CMCD only: ``g`` = grad log p~ -
        grad log p_0 at x and ``beta`` = beta_k (for T times (T, 1, 1)); with ``score_gate`` only: ``score``, the
        network's gated score input."""
        diff = torch.exp(2 * self.log_sigma)
        if self.cfg.sampler == "dis":
            return diff * self.net(x, row, score), torch.zeros_like(x)
        if self.cfg.sampler == "dbs":
            u, v = self.net(x, row, score).chunk(2, dim=-1)
            return diff * u, diff * v
        u = self.net(x, row, score)
        langevin = 0.5 * beta * g
        return diff * (langevin + u), diff * (langevin - u)


@dataclass
class Trajectory:
    """One batch of simulated trajectories: final states (B, d) and the two path log densities, each (B,).

    ``log_q`` = log p_0(x_0) + sum_k log F_k, the forward path density; ``log_p`` = log p~(x_K) + sum_k log B_k, the
    unnormalized backward path density. ``log_rn`` = R = log_q - log_p is the log Radon-Nikodym derivative of the
    forward path measure against the unnormalized backward one (docs/design.md, section 'Bridge samplers').
    """

    x: torch.Tensor
    log_q: torch.Tensor
    log_p: torch.Tensor

    @property
    def log_rn(self) -> torch.Tensor:
        return self.log_q - self.log_p


def simulate(
    model: BridgeSampler, target: SamplingTarget, n: int, generator: torch.Generator, *, detach_path: bool = False
) -> Trajectory:
    """Run K Euler-Maruyama steps from the prior and accumulate log q and log p of the path once.

    ``detach_path=False`` keeps gradients through the states (reparameterization: rKL-R). ``detach_path=True`` stops
    them at every state, so gradients flow only through the kernels' parameters at fixed states (LV, rKL-LD, TB).

    What depends on time alone is computed once, before the loop: the time grid and the network's ``time_table``
    (for ``ControlNet`` its parameter-free embeddings, the values it computed per step before, bit for bit).

    With ``detach_path`` and gradients enabled (training on a detached loss) at n <= ``TWO_PASS_MAX_BATCH``, the
    states are simulated without a graph, then the path densities computed for many states per network call
    (``_path_densities``: up to ``CHUNK_ROWS`` rows, at n = 64 all K+1 times in one call) instead of K+1 calls on n
    rows, with a graph of a few large operations instead of K+1 times many small ones: what small batches spend their
    time on. The states are the same bit for bit; log q and log p differ from the step-by-step sums by rounding.
    Larger batches stay step by step, which is faster there (their per-step tensors stay in cache).
    """
    if detach_path and torch.is_grad_enabled() and n <= TWO_PASS_MAX_BATCH:
        with torch.no_grad():
            states, scores = _simulate_states(model, target, n, generator)
        return _path_densities(model, target, states, scores)
    return _simulate_stepwise(model, target, n, generator, detach_path)


class _Kernels:
    """What one simulation holds fixed: the kernels' (rho, log V, std), the prior, the schedule and the network's
    time table; ``drifts`` evaluates (fwd, bwd) at states of one time index k, or of all of them at once."""

    def __init__(self, model: BridgeSampler):
        self.model = model
        self.rho, self.log_v = model.reference_kernel()
        self.std = torch.exp(0.5 * self.log_v)
        self.mu = model.prior_mean
        self.inv_prior_var = torch.exp(-2 * model.prior_log_std)
        self.cmcd = model.cfg.sampler == "cmcd"
        self.needs_score = self.cmcd or model.cfg.score_gate
        self.annealing = self.cmcd or model.cfg.annealed_gate
        self.betas = model.betas() if self.annealing else None
        self.table = model.net.time_table(model.time_grid())

    def drifts(
        self, x: torch.Tensor, target_score: torch.Tensor | None, k: int | slice
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(fwd_k(x), bwd_k(x)) at x (B, d) of time index k, or with k a slice of T time indices at x (T, B, d);
        ``target_score`` is grad log p~(x) (None unless ``needs_score``). ``BridgeSampler.drifts`` with its
        inputs: the network's gated score is grad log p~ for DIS/DBS, grad log pi_beta for CMCD."""
        model = self.model
        many = isinstance(k, slice)
        row = self.table[k, None] if many else self.table[k : k + 1]
        if not self.needs_score:
            return model.drifts(x, row)
        if not self.annealing:
            return model.drifts(x, row, score=target_score)
        beta = self.betas[k, None, None] if many else self.betas[k]
        prior_score = -(x - self.mu) * self.inv_prior_var
        g = target_score - prior_score
        annealed = prior_score + beta * g if model.cfg.score_gate else None  # grad log pi_beta
        return model.drifts(x, row, g, beta, annealed) if self.cmcd else model.drifts(x, row, score=annealed)

    def step(self, x: torch.Tensor, fwd: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean of F_k, a draw x_{k+1} from it) given x_k and fwd_k(x_k)."""
        mean_f = self.mu + self.rho * (x - self.mu) + fwd / self.model.steps
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return mean_f, mean_f + self.std * noise


def _simulate_stepwise(
    model: BridgeSampler, target: SamplingTarget, n: int, generator: torch.Generator, detach_path: bool
) -> Trajectory:
    """``simulate`` with the path densities summed step by step, as the states are drawn."""
    kern = _Kernels(model)
    grad_path = not detach_path and torch.is_grad_enabled()

    def score(x: torch.Tensor) -> torch.Tensor | None:
        return target.score(x, grad_path) if kern.needs_score else None

    x = model.sample_prior(n, generator)
    if detach_path:
        x = x.detach()
    log_q = model.prior_log_prob(x)
    log_p = torch.zeros_like(log_q)
    fwd, _ = kern.drifts(x, score(x), 0)
    for k in range(model.steps):
        mean_f, x_new = kern.step(x, fwd, generator)
        if detach_path:
            x_new = x_new.detach()
        fwd, bwd = kern.drifts(x_new, score(x_new), k + 1)
        mean_b = kern.mu + kern.rho * (x_new - kern.mu) + bwd / model.steps
        log_q = log_q + gaussian_log_pdf(x_new, mean_f, kern.log_v, sum_last=True)
        log_p = log_p + gaussian_log_pdf(x, mean_b, kern.log_v, sum_last=True)
        x = x_new
    return Trajectory(x, log_q, log_p + target.log_prob(x))


def _simulate_states(
    model: BridgeSampler, target: SamplingTarget, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The states x_0..x_K (K+1, n, d) of a simulation and the target scores at them (None unless the drifts need
    them), drawn exactly as ``_simulate_stepwise`` draws them."""
    kern = _Kernels(model)
    x = model.sample_prior(n, generator)
    states, scores = [x], [target.score(x)] if kern.needs_score else None
    fwd, _ = kern.drifts(x, scores[0] if scores else None, 0)
    for k in range(model.steps):
        x = kern.step(x, fwd, generator)[1]
        states.append(x)
        s = None
        if scores is not None:
            s = target.score(x)
            scores.append(s)
        if k + 1 < model.steps:
            fwd, _ = kern.drifts(x, s, k + 1)
    return torch.stack(states), torch.stack(scores) if scores is not None else None


def _path_densities(
    model: BridgeSampler, target: SamplingTarget, states: torch.Tensor, scores: torch.Tensor | None
) -> Trajectory:
    """The trajectory of the (detached) states (K+1, n, d) with target scores ``scores``: log q and log p with the
    drifts of ``chunk`` consecutive time indices per network call (``_Kernels.drifts`` with k a slice)."""
    kern, K, n = _Kernels(model), model.steps, states.shape[1]
    chunk = max(1, CHUNK_ROWS // n)
    log_q, log_p = model.prior_log_prob(states[0]), target.log_prob(states[-1])
    for a in range(0, K + 1, chunk):
        b = min(a + chunk, K + 1)
        fwd, bwd = kern.drifts(states[a:b], scores[a:b] if scores is not None else None, slice(a, b))
        end, lo = min(b, K), max(a, 1)  # log q terms a..end-1 (fwd at x_k), log p terms lo-1..b-2 (bwd at x_k+1)
        mean_f = kern.mu + kern.rho * (states[a:end] - kern.mu) + fwd[: end - a] / K
        log_q = log_q + gaussian_log_pdf(states[a + 1 : end + 1], mean_f, kern.log_v, sum_last=True).sum(0)
        mean_b = kern.mu + kern.rho * (states[lo:b] - kern.mu) + bwd[lo - a :] / K
        log_p = log_p + gaussian_log_pdf(states[lo - 1 : b - 1], mean_b, kern.log_v, sum_last=True).sum(0)
    return Trajectory(states[-1], log_q, log_p)
