"""Training and evaluation of a bridge sampler: RAdam, clipping at 1, cosine decay, checkpoints, divergence stop.

A run directory holds ``config.json`` (the TrainConfig), ``metrics.jsonl`` (one evaluation per line),
``checkpoint.safetensors`` (the last good state: model, learned log Z, optimizer, scheduler, RNG; the JSON state is
in the file's metadata) and at the end ``metrics.json`` (DESIGN.md section 7).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from diffloss.bridge import metrics as M
from diffloss.bridge.losses import DETACHED, LOSSES, check_batch, loss_terms
from diffloss.bridge.samplers import BridgeSampler, SamplerConfig, simulate
from diffloss.bridge.targets import Density, get_density
from diffloss.errors import DifflossError, unknown_name
from diffloss.io import atomic_write, write_json_atomic, write_text_atomic

CHECKPOINT = "checkpoint.safetensors"


@dataclass(frozen=True)
class TrainConfig:
    """A training run. ``sampler`` holds the architecture; ``eval_every`` = 0 evaluates only at the end.

    The checkpoint is saved at every evaluation and every ``ckpt_every`` iterations (0: only at evaluations), so a
    diverged or interrupted run keeps or resumes from at most ``ckpt_every`` iterations back."""

    target: str
    sampler: SamplerConfig
    loss: str = "rkl-ld"
    iters: int = 1000
    batch: int = 256
    seed: int = 0
    lr: float = 1e-3
    eval_every: int = 100
    eval_n: int = 2000
    ckpt_every: int = 100

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise unknown_name("loss", self.loss, LOSSES)
        check_batch(self.batch)
        if self.iters < 0:
            raise DifflossError(f"--iters must be >= 0, got {self.iters}")
        if self.eval_every < 0 or self.eval_n < 2:
            raise DifflossError("--eval-every must be >= 0 and --eval-n >= 2")
        if self.ckpt_every < 0:
            raise DifflossError(f"--ckpt-every must be >= 0 (0: checkpoint only at evaluations), got {self.ckpt_every}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise DifflossError(f"--lr must be a positive number, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sampler": self.sampler.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**{**d, "sampler": SamplerConfig.from_dict(d["sampler"])})


def default_init_sigma(density: Density, sampler: str, steps: int) -> float:
    """The initial diffusion coefficient sigma: sqrt(2 K s) for CMCD on a target with a Langevin step s, else 1.

    CMCD moves x by s * beta * grad log p~ per step with s = sigma^2 / (2K) (DESIGN.md section 5); keeping s at the
    target's ``langevin_step`` keeps the explicit Euler scheme stable whatever K is. DIS and DBS have no target score
    in their drift, so nothing bounds their step and they start at sigma = 1.
    """
    step = density.langevin_step
    return math.sqrt(2 * steps * step) if sampler == "cmcd" and step is not None else 1.0


def make_config(
    target: str,
    sampler: str,
    steps: int = 128,
    init_std: float | None = None,
    init_sigma: float | None = None,
    **kw: Any,
) -> TrainConfig:
    """A TrainConfig for a named target; the prior's initial std defaults to the target's ``init_std`` and the
    diffusion coefficient to ``default_init_sigma``."""
    density = get_density(target)
    arch = {k: kw.pop(k) for k in ("hidden", "time_features", "learn_sigma", "learn_prior", "score_gate") if k in kw}
    std = init_std if init_std is not None else density.init_std
    sigma = init_sigma if init_sigma is not None else default_init_sigma(density, sampler, steps)
    return TrainConfig(target, SamplerConfig(sampler, density.dim, steps, init_std=std, init_sigma=sigma, **arch), **kw)


@torch.no_grad()
def evaluate(
    model: BridgeSampler, target: Density, n: int, generator: torch.Generator, sinkhorn: bool = True
) -> dict[str, Any]:
    """ELBO, log Z estimate (and its error), ESS, Sinkhorn (eps stated), MMD and EMC on n fresh trajectories.

    ``sinkhorn=False`` leaves the Sinkhorn divergence null (its O(n^2)-per-iteration solve can cost more than a
    short training run).
    ELBO and log Z come from the same samples. Sample metrics are null where the target has no reference samples
    or modes; ``log_z_error`` = log Z_hat - log Z where log Z is known. Non-finite values (a broken sampler) are null.
    ``generator`` lives on the model's device; the reference samples are drawn on the CPU (by ``generator`` itself
    there, else by a CPU generator with its seed) and the metrics computed there.
    """
    path = simulate(model, target, n, generator, detach_path=True)
    R, x = path.log_rn.double().cpu(), path.x.cpu()
    if generator.device.type != "cpu":
        generator = torch.Generator().manual_seed(generator.initial_seed())
    out: dict[str, Any] = {"n": n, "elbo": M.elbo(R), "log_z": M.log_z_hat(R), "ess": M.ess(R)}
    out["log_z_error"] = out["log_z"] - target.log_Z if target.log_Z is not None else None
    finite = bool(torch.isfinite(x).all())
    ref = target.reference_samples(n, generator) if finite else None
    out["sinkhorn"], out["sinkhorn_eps"] = M.sinkhorn(x, ref) if ref is not None and sinkhorn else (None, None)
    out["mmd"] = M.mmd(x, ref) if ref is not None else None
    modes = target.modes()
    out["emc"] = M.emc(x, modes) if modes is not None and finite else None
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}


def _is_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class Run:
    """The mutable state of a run: target, model, learned log Z, optimizer, scheduler, RNG, iteration."""

    def __init__(self, cfg: TrainConfig, device: str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.target = get_density(cfg.target)
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
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(cfg.iters, 1))
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.iteration = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v.detach() for k, v in self.model.state_dict().items()}
        out["log_z"] = self.log_z.detach()
        for i, st in self.optimizer.state_dict()["state"].items():
            out.update({f"optim.{i}.{k}": v for k, v in st.items()})
        out["rng"] = self.generator.get_state()
        return {k: v.detach().cpu().contiguous().clone() for k, v in out.items()}

    def save(self, path: Path) -> None:
        groups = self.optimizer.state_dict()["param_groups"]
        meta = {
            "config": self.cfg.to_dict(),
            "iteration": self.iteration,
            "param_groups": groups,
            "scheduler": self.scheduler.state_dict(),
        }
        tensors = self.tensors()
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"state": json.dumps(meta)}))

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> Run:
        """Rebuild a run on ``device`` from a checkpoint file; a missing or unreadable file is a DifflossError."""
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                meta = json.loads(f.metadata()["state"])
            run = cls(TrainConfig.from_dict(meta["config"]), device)
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
        except (OSError, SafetensorError, KeyError, ValueError, TypeError, RuntimeError, json.JSONDecodeError) as e:
            raise DifflossError(
                f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                f"give a run directory written by `diffloss bridge train`"
            ) from None
        return run

    def step(self) -> tuple[float, bool]:
        """One optimization step; returns (loss, ok). ok is False on a non-finite loss, R or parameter."""
        model, cfg = self.model, self.cfg
        path = simulate(model, self.target, cfg.batch, self.generator, detach_path=DETACHED[cfg.loss])
        R = path.log_rn.detach()
        if cfg.loss == "tb" and self.iteration == 0:
            with torch.no_grad():
                self.log_z.fill_(-float(R.mean()))  # start log Z at the first batch's ELBO
        loss = loss_terms(cfg.loss, path, self.log_z).mean()
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
        return evaluate(self.model, self.target, n, torch.Generator(self.device).manual_seed(seed), sinkhorn)


def check_device(device: str) -> str:
    """``device`` if torch can use it here ("cpu", "cuda", "cuda:1", ...), else a DifflossError."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DifflossError(f"--device: {device!r} is not a device; use cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise DifflossError(f"--device: {device!r} is not supported; use cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DifflossError("--device cuda: torch sees no CUDA device on this machine; use --device cpu")
    return device


def train(
    cfg: TrainConfig, out: str | Path, *, resume: bool = False, quiet: bool = False, device: str = "cpu"
) -> dict[str, Any]:
    """Train (or with ``resume`` continue) a run in ``out`` on ``device``; writes and returns ``metrics.json``.

    The device is not part of the configuration: a run may be resumed on another device (not bitwise identically)."""
    check_device(device)
    out = Path(out)
    ckpt = out / CHECKPOINT
    if resume and ckpt.exists():
        run = Run.load(ckpt, device)
        if run.cfg != cfg:
            diff = [k for k, v in cfg.to_dict().items() if run.cfg.to_dict()[k] != v]
            raise DifflossError(f"--resume: the checkpoint in {out} has other {', '.join(diff)}; use the same options")
    else:
        run = Run(cfg, device)
    write_json_atomic(out / "config.json", cfg.to_dict())
    log_path = out / "metrics.jsonl"
    kept = [ln for ln in _read_lines(log_path) if json.loads(ln)["iteration"] <= run.iteration] if resume else []
    write_text_atomic(log_path, "".join(ln + "\n" for ln in kept))
    run.save(ckpt)
    eval_seed = cfg.seed + 1_000_003
    diverged_at, losses = None, []
    bar = tqdm(total=cfg.iters, initial=run.iteration, disable=quiet, file=sys.stderr, desc=f"{cfg.sampler.sampler}")
    while run.iteration < cfg.iters:
        attempted = run.iteration + 1
        loss, ok = run.step()
        if not ok:
            diverged_at = attempted
            bar.close()
            run = Run.load(ckpt, device)
            print(
                f"diverged: non-finite loss, R or parameter at iteration {diverged_at}; "
                f"kept the last good checkpoint (iteration {run.iteration}) and evaluated it",
                file=sys.stderr,
            )
            break
        losses.append(loss)
        bar.update(1)
        if _due(cfg.eval_every, run.iteration, cfg.iters):
            lr = run.scheduler.get_last_lr()[0]
            row = {"iteration": run.iteration, "train_loss": sum(losses) / len(losses), "lr": lr}
            row.update(run.evaluate(cfg.eval_n, eval_seed + run.iteration))
            losses = []
            _append_line(log_path, json.dumps(row))
            bar.set_postfix(elbo=f"{row['elbo']:.3f}", log_z=f"{row['log_z']:.3f}")
            run.save(ckpt)
        elif _due(cfg.ckpt_every, run.iteration, cfg.iters):
            run.save(ckpt)
    bar.close()
    if diverged_at is None:
        run.save(ckpt)
    final = run.evaluate(cfg.eval_n, eval_seed + run.iteration)
    _append_line(log_path, json.dumps({"iteration": run.iteration, **final}))
    result = {**final, "iterations": run.iteration, "diverged_at": diverged_at}
    write_json_atomic(out / "metrics.json", result)
    return result


def _due(every: int, iteration: int, iters: int) -> bool:
    """Whether a periodic action (every ``every`` iterations, 0 = never) falls on ``iteration`` before the last one
    (the end of training evaluates and saves anyway)."""
    return every > 0 and iteration % every == 0 and iteration < iters


def _read_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def evaluate_checkpoint(run_dir: str | Path, n: int, seed: int) -> dict[str, Any]:
    """Re-evaluate the last good checkpoint of a run directory on n fresh trajectories."""
    if n < 2:
        raise DifflossError(f"--n must be >= 2, got {n}")
    run = Run.load(Path(run_dir) / CHECKPOINT)
    return {**run.evaluate(n, seed), "iteration": run.iteration, "config": run.cfg.to_dict()}


__all__ = ["TrainConfig", "Run", "default_init_sigma", "evaluate", "evaluate_checkpoint", "make_config", "train"]
