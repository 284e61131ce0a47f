"""The optimizer chains of a bridge-sampler run: which parameters each one updates, at which learning rate.

A chain is an RAdam optimizer with its own cosine learning-rate decay (from its peak ``lr`` to ``lr_floor * lr``
over the run's iterations) whose gradient is clipped at global norm ``GRAD_CLIP`` on its own (the norm over that
chain's parameters only). A run has either

- one chain "all" over every trained parameter (the default, ``BridgeConfig.separate_chains`` False), or
- three chains as the reference (sebaleh87/dds_optim ``SDE_Losses/Base_SDE_Loss.py``: the optax chains of
  ``initialize_optimizer``, ``init_SDE_params_optimizer`` and ``init_Interpol_params_optimizer``, each
  ``clip_by_global_norm(clip_value)`` then ``scale_by_radam`` then a cosine schedule to l_max / 10):

  ``network``        the control network (and TB's learned log Z), at ``lr``;
  ``sde``            the prior mean and std and the diffusion coefficient sigma, at ``lr`` (the reference's
                     ``--SDE_lr``, equal to ``--lr`` in every best run);
  ``interpolation``  CMCD's annealing schedule beta (``beta_logits``), at ``interpol_lr`` (``--Interpol_lr``).

Chains without a trained parameter (the SDE chain with sigma and the prior frozen, the interpolation chain of DIS
and DBS) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from diffloss.bridge.config import BridgeConfig
from diffloss.bridge.samplers import BridgeSampler

GRAD_CLIP = 1.0  # global-norm clip of every chain (the reference's --clip_value default)
SDE_PARAMETERS = ("prior_mean", "prior_log_std", "log_sigma")
INTERPOLATION_PARAMETERS = ("beta_logits",)


@dataclass
class Chain:
    """One optimizer chain: its name, parameters, RAdam optimizer and cosine scheduler."""

    name: str
    params: list[nn.Parameter]
    optimizer: torch.optim.RAdam
    scheduler: torch.optim.lr_scheduler.CosineAnnealingLR

    def clip_and_step(self) -> None:
        """Clip this chain's gradient at global norm ``GRAD_CLIP``, then step its optimizer and its schedule."""
        torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP)
        self.optimizer.step()
        self.scheduler.step()


def chain_parameters(
    model: BridgeSampler, log_z: nn.Parameter | None, separate: bool
) -> list[tuple[str, list[nn.Parameter]]]:
    """(name, trained parameters) of each chain, in the order network, sde, interpolation (or the one chain "all",
    the model's parameters in their module order then log Z); empty chains left out."""
    extra = [] if log_z is None else [log_z]
    if not separate:
        return [("all", [p for p in model.parameters() if p.requires_grad] + extra)]
    named = dict(model.named_parameters())
    sde = [named[n] for n in SDE_PARAMETERS]
    interpolation = [named[n] for n in INTERPOLATION_PARAMETERS if n in named]
    network = [p for n, p in named.items() if n not in SDE_PARAMETERS + INTERPOLATION_PARAMETERS] + extra
    groups = [("network", network), ("sde", sde), ("interpolation", interpolation)]
    trained = [(name, [p for p in params if p.requires_grad]) for name, params in groups]
    return [(name, params) for name, params in trained if params]


def build_chains(model: BridgeSampler, log_z: nn.Parameter | None, cfg: BridgeConfig) -> list[Chain]:
    """The chains of a run (module docstring), each with its peak lr decaying by a cosine to ``lr_floor`` times it
    over ``cfg.iters``."""
    chains = []
    for name, params in chain_parameters(model, log_z, cfg.separate_chains):
        lr = cfg.interpol_lr if name == "interpolation" and cfg.interpol_lr is not None else cfg.lr
        optimizer = torch.optim.RAdam(params, lr=lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(cfg.iters, 1), eta_min=lr * cfg.lr_floor
        )
        chains.append(Chain(name, params, optimizer, scheduler))
    return chains


__all__ = ["GRAD_CLIP", "INTERPOLATION_PARAMETERS", "SDE_PARAMETERS", "Chain", "build_chains", "chain_parameters"]
