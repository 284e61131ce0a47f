"""The mutable state of a bridge-sampler run (``BridgeRun``): one optimization step, evaluation, and checkpoints.

Checkpoints go through ``diffloss.checkpoint`` (safetensors, SHA-256 over the tensors, atomic write): the tensors
are the model (``model.*``), the learned log Z (``log_z``), the state of each optimizer chain
(``optim.<chain>.<param>.<name>``, ``diffloss.bridge.chains``) and the RNG state (``rng``); the metadata holds the
``BridgeConfig``, the iteration and per chain its parameter groups and scheduler state (``chains``). Loading restores
all of it, so a resumed run continues bit-identically on the same device. Checkpoints written before the chains
(one optimizer: ``optim.<param>.<name>``, ``param_groups`` and ``scheduler``) load as the one chain "all".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffloss.bridge.chains import Chain, build_chains
from diffloss.bridge.config import BridgeConfig
from diffloss.bridge.evaluate import evaluate_bridge
from diffloss.bridge.losses import DETACHED, loss_terms
from diffloss.bridge.samplers import BridgeSampler, simulate
from diffloss.bridge.targets import get_sampling_target
from diffloss.checkpoint import load_checkpoint, save_checkpoint
from diffloss.errors import DifflossError


def _is_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class BridgeRun:
    """The mutable state of a run: target, model, learned log Z, optimizer chains, RNG, iteration."""

    def __init__(self, cfg: BridgeConfig, device: str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.target = get_sampling_target(cfg.target)
        if self.target.dim != cfg.sampler.dim:
            raise DifflossError(f"sampler dim {cfg.sampler.dim} does not match target dim {self.target.dim}")
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)  # network initialisation
            self.model = BridgeSampler(cfg.sampler).to(self.device)
        self.log_z = torch.nn.Parameter(torch.zeros((), device=self.device))
        self.chains = build_chains(self.model, self.log_z if cfg.loss == "tb" else None, cfg)
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.iteration = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything of the state that is a tensor, by checkpoint name."""
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        out["log_z"] = self.log_z.detach()
        for chain in self.chains:
            for i, st in chain.optimizer.state_dict()["state"].items():
                out.update({f"optim.{chain.name}.{i}.{k}": v for k, v in st.items()})
        out["rng"] = self.generator.get_state()
        return out

    def meta(self) -> dict[str, Any]:
        """The rest of the state, as JSON."""
        return {
            "config": self.cfg.to_dict(),
            "iteration": self.iteration,
            "chains": {c.name: _chain_meta(c) for c in self.chains},
        }

    def learning_rates(self) -> dict[str, float]:
        """The current learning rate of each chain, by chain name."""
        return {c.name: c.scheduler.get_last_lr()[0] for c in self.chains}

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.tensors(), self.meta())

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> BridgeRun:
        """Rebuild a run on ``device`` from a checkpoint file; a missing, corrupt or foreign file is a one-line
        DifflossError."""
        try:
            tensors, meta = _chain_layout(*load_checkpoint(path))
        except DifflossError:
            if _is_unchecksummed_bridge_checkpoint(path):
                raise DifflossError(
                    f"cannot read checkpoint {path}: it has the bridge format of diffloss before checksums, which is "
                    "no longer read; retrain the run (`diffloss bridge train` with a new --out)"
                ) from None
            raise
        try:
            run = cls(BridgeConfig.from_dict(meta["config"]), device)
            run.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            with torch.no_grad():
                run.log_z.copy_(tensors["log_z"])
            if sorted(meta["chains"]) != sorted(c.name for c in run.chains):
                raise ValueError(f"optimizer chains {sorted(meta['chains'])} do not match the configuration's")
            for chain in run.chains:
                state: dict[int, dict[str, torch.Tensor]] = {}
                for k, v in tensors.items():
                    if k.startswith(f"optim.{chain.name}."):
                        _, _, i, name = k.split(".", 3)
                        state.setdefault(int(i), {})[name] = v
                saved = meta["chains"][chain.name]
                chain.optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
                chain.scheduler.load_state_dict(saved["scheduler"])
            run.generator.set_state(tensors["rng"])
            run.iteration = int(meta["iteration"])
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            raise DifflossError(
                f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                f"give a run directory written by `diffloss bridge train`"
            ) from None
        return run

    def step(self) -> tuple[float, bool]:
        """One optimization step; returns (loss, ok). ok is False on a non-finite loss, R or parameter."""
        model, cfg = self.model, self.cfg
        traj = simulate(model, self.target, cfg.batch, self.generator, detach_path=DETACHED[cfg.loss])
        R = traj.log_rn.detach()
        if cfg.loss == "tb" and self.iteration == 0:
            with torch.no_grad():
                self.log_z.fill_(-float(R.mean()))  # start log Z at the first batch's ELBO
        loss = loss_terms(cfg.loss, traj, self.log_z).mean()
        if not _is_finite(loss, R):
            return float(loss.detach()), False
        for chain in self.chains:
            chain.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for chain in self.chains:
            chain.clip_and_step()
        self.iteration += 1
        return float(loss.detach()), _is_finite(*model.parameters(), self.log_z)

    def evaluate(self, n: int, seed: int, sinkhorn: bool = True) -> dict[str, Any]:
        """``evaluate_bridge`` of the current model on n fresh trajectories drawn with ``seed``."""
        return evaluate_bridge(self.model, self.target, n, torch.Generator(self.device).manual_seed(seed), sinkhorn)


def _chain_meta(chain: Chain) -> dict[str, Any]:
    return {"param_groups": chain.optimizer.state_dict()["param_groups"], "scheduler": chain.scheduler.state_dict()}


def _chain_layout(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """A checkpoint in the layout of the chains: one written with a single optimizer becomes the chain "all"."""
    if "chains" in meta or "param_groups" not in meta:
        return tensors, meta
    chains = {"all": {"param_groups": meta["param_groups"], "scheduler": meta["scheduler"]}}
    renamed = {(f"optim.all.{k[6:]}" if k.startswith("optim.") else k): v for k, v in tensors.items()}
    return renamed, {**meta, "chains": chains}


def _is_unchecksummed_bridge_checkpoint(path: Path) -> bool:
    """Whether ``path`` is a safetensors file of the bridge's own earlier format (JSON state under "state")."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception:  # not a safetensors file at all: safetensors raises its own error types
        return False
    return "state" in metadata and "diffloss" not in metadata


__all__ = ["BridgeRun"]
