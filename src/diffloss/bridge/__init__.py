"""Diffusion bridge samplers (DIS, DBS, CMCD) for unnormalized densities, beside the diffusion-loss library.

Modules: ``targets`` (the sampling targets, ``get_sampling_target``), ``samplers`` (the discretized bridge and
``simulate``), ``losses`` (rKL-R, LV, rKL-LD, TB from R), ``metrics`` (ELBO, log Z_hat, ESS, sample metrics),
``config`` (``BridgeConfig``, ``make_config``), ``run`` (``BridgeRun``: state, step, checkpoints), ``evaluate``
(``evaluate_bridge``), ``train`` (``train_bridge``, ``evaluate_checkpoint``) and ``bench`` (the benchmark grid).
Conventions: docs/design.md, section 'Bridge samplers'.
"""

from diffloss.bridge.config import BridgeConfig, default_init_sigma, make_config
from diffloss.bridge.evaluate import evaluate_bridge
from diffloss.bridge.losses import BRIDGE_LOSSES
from diffloss.bridge.run import BridgeRun
from diffloss.bridge.samplers import BRIDGE_SAMPLERS, SamplerConfig, Trajectory, simulate
from diffloss.bridge.targets import SAMPLING_TARGETS, SamplingTarget, get_sampling_target
from diffloss.bridge.train import CHECKPOINT, EVAL_SEED_OFFSET, check_device, evaluate_checkpoint, train_bridge

__all__ = [
    "BRIDGE_LOSSES",
    "BRIDGE_SAMPLERS",
    "CHECKPOINT",
    "EVAL_SEED_OFFSET",
    "SAMPLING_TARGETS",
    "BridgeConfig",
    "BridgeRun",
    "SamplerConfig",
    "SamplingTarget",
    "Trajectory",
    "check_device",
    "default_init_sigma",
    "evaluate_bridge",
    "evaluate_checkpoint",
    "get_sampling_target",
    "make_config",
    "simulate",
    "train_bridge",
]
