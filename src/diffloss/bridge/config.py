"""The configuration of a bridge-sampler run (``BridgeConfig``) and its construction from a target's suggestions.

``make_config`` is what ``diffloss bridge train`` and the benchmark call with their options; the defaults it fills
in (the prior's initial std, the initial diffusion coefficient) come from the sampling target.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from diffloss.bridge.losses import BRIDGE_LOSSES, check_batch
from diffloss.bridge.samplers import SamplerConfig
from diffloss.bridge.targets import SamplingTarget, get_sampling_target
from diffloss.errors import DifflossError, unknown_name

# the SamplerConfig options
ARCHITECTURE = (
    "hidden",
    "time_features",
    "learn_sigma",
    "learn_prior",
    "score_gate",
    "network",
    "dbs_networks",
    "annealed_gate",
)


@dataclass(frozen=True)
class BridgeConfig:
    """A bridge-sampler training run. ``sampler`` holds the architecture; ``eval_every`` = 0 evaluates only at the end.

    The learning rate decays by a cosine from ``lr`` to ``lr_floor * lr`` over ``iters`` (0: to zero, the default;
    the reference's runs use 0.1, ``diffloss.bridge.presets``). ``separate_chains`` trains the network, the SDE
    parameters and CMCD's annealing schedule in three optimizer chains, each clipped on its own, the last at
    ``interpol_lr`` (None: ``lr``); without it one chain trains everything (``diffloss.bridge.chains``).

    The checkpoint is saved at every evaluation and every ``ckpt_every`` iterations (0: only at evaluations), so a
    diverged or interrupted run keeps or resumes from at most ``ckpt_every`` iterations back."""

    target: str
    sampler: SamplerConfig
    loss: str = "rkl-ld"
    iters: int = 1000
    batch: int = 256
    seed: int = 0
    lr: float = 1e-3
    lr_floor: float = 0.0
    separate_chains: bool = False
    interpol_lr: float | None = None
    eval_every: int = 100
    eval_n: int = 2000
    ckpt_every: int = 100

    def __post_init__(self) -> None:
        if self.loss not in BRIDGE_LOSSES:
            raise unknown_name("loss", self.loss, BRIDGE_LOSSES)
        check_batch(self.batch)
        if self.iters < 0:
            raise DifflossError(f"--iters must be >= 0, got {self.iters}")
        if self.eval_every < 0 or self.eval_n < 2:
            raise DifflossError("--eval-every must be >= 0 and --eval-n >= 2")
        if self.ckpt_every < 0:
            raise DifflossError(f"--ckpt-every must be >= 0 (0: checkpoint only at evaluations), got {self.ckpt_every}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise DifflossError(f"--lr must be a positive number, got {self.lr}")
        if not 0 <= self.lr_floor <= 1:
            raise DifflossError(f"--lr-floor must be in [0, 1] (a fraction of --lr), got {self.lr_floor}")
        if self.interpol_lr is not None and not (self.separate_chains and self.interpol_lr >= 0):
            raise DifflossError(
                f"--interpol-lr must be >= 0 and needs --separate-chains (one chain: one lr), got {self.interpol_lr}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sampler": self.sampler.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BridgeConfig:
        return cls(**{**d, "sampler": SamplerConfig.from_dict(d["sampler"])})


def default_init_sigma(target: SamplingTarget, sampler: str, steps: int) -> float:
    """The initial diffusion coefficient sigma: sqrt(2 K s) for CMCD on a target with a Langevin step s, else 1.

    CMCD moves x by s * beta * grad log p~ per step with s = sigma^2 / (2K) (``diffloss.bridge.samplers``); keeping s
    at the target's ``langevin_step`` keeps the explicit Euler scheme stable whatever K is. DIS and DBS have no target
    score in their drift, so nothing bounds their step and they start at sigma = 1.
    """
    step = target.langevin_step
    return math.sqrt(2 * steps * step) if sampler == "cmcd" and step is not None else 1.0


def make_config(
    target: str,
    sampler: str,
    steps: int = 128,
    init_std: float | None = None,
    init_sigma: float | None = None,
    **options: Any,
) -> BridgeConfig:
    """A BridgeConfig for a named sampling target; the prior's initial std defaults to the target's ``init_std`` and
    the diffusion coefficient to ``default_init_sigma``. ``options`` are the ``SamplerConfig`` fields of
    ``ARCHITECTURE`` and the ``BridgeConfig`` fields (loss, iters, batch, seed, lr, lr_floor,
    separate_chains, interpol_lr, eval_every, eval_n, ckpt_every)."""
    sampling_target = get_sampling_target(target)
    arch = {k: options.pop(k) for k in ARCHITECTURE if k in options}
    std = init_std if init_std is not None else sampling_target.init_std
    sigma = init_sigma if init_sigma is not None else default_init_sigma(sampling_target, sampler, steps)
    sampler_cfg = SamplerConfig(sampler, sampling_target.dim, steps, init_std=std, init_sigma=sigma, **arch)
    return BridgeConfig(target, sampler_cfg, **options)
