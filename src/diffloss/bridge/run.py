"""The mutable state of a bridge-sampler run (``BridgeRun``): one optimization step, evaluation, and checkpoints.

Checkpoints go through ``diffloss.checkpoint`` (safetensors, SHA-256 over the tensors, atomic write): the tensors
are the model (``model.*``), the learned log Z (``log_z``), the optimizer state (``optim.<param>.<name>``) and the
RNG state (``rng``); the metadata holds the ``BridgeConfig``, the iteration, the optimizer's parameter groups and the
scheduler state. Loading restores all of it, so a resumed run continues bit-identically on the same device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

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
    """The mutable state of a run: target, model, learned log Z, optimizer, scheduler, RNG, iteration."""

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
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.loss == "tb":
            params.append(self.log_z)
        self.optimizer = torch.optim.RAdam(params, lr=cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(cfg.iters, 1), eta_min=cfg.lr * cfg.lr_floor
        )
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.iteration = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything of the state that is a tensor, by checkpoint name."""
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        out["log_z"] = self.log_z.detach()
        for i, st in self.optimizer.state_dict()["state"].items():
            out.update({f"optim.{i}.{k}": v for k, v in st.items()})
        out["rng"] = self.generator.get_state()
        return out

    def meta(self) -> dict[str, Any]:
        """The rest of the state, as JSON."""
        return {
            "config": self.cfg.to_dict(),
            "iteration": self.iteration,
            "param_groups": self.optimizer.state_dict()["param_groups"],
            "scheduler": self.scheduler.state_dict(),
        }

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.tensors(), self.meta())

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> BridgeRun:
        """Rebuild a run on ``device`` from a checkpoint file; a missing, corrupt or foreign file is a one-line
        DifflossError."""
        try:
            tensors, meta = load_checkpoint(path)
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
            state: dict[int, dict[str, torch.Tensor]] = {}
            for k, v in tensors.items():
                if k.startswith("optim."):
                    _, i, name = k.split(".", 2)
                    state.setdefault(int(i), {})[name] = v
            run.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
            run.scheduler.load_state_dict(meta["scheduler"])
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
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        return float(loss.detach()), _is_finite(*model.parameters(), self.log_z)

    def evaluate(self, n: int, seed: int, sinkhorn: bool = True) -> dict[str, Any]:
        """``evaluate_bridge`` of the current model on n fresh trajectories drawn with ``seed``."""
        return evaluate_bridge(self.model, self.target, n, torch.Generator(self.device).manual_seed(seed), sinkhorn)


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
