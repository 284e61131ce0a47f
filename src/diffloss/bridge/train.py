"""Training a bridge sampler (``train_bridge``): RAdam, clipping at 1, cosine decay, checkpoints, divergence stop;
and re-evaluating a finished run (``evaluate_checkpoint``).

A run directory holds ``config.json`` (the ``BridgeConfig``), ``metrics.jsonl`` (one evaluation per line),
``checkpoint.safetensors`` (the last good state, see ``diffloss.bridge.run``) and at the end ``metrics.json`` (the
final evaluation, ``diffloss.bridge.evaluate``, with "iterations" and "diverged_at"); the contract of
``diffloss bridge train`` (docs/design.md, section 'Bridge samplers').
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from diffloss.bridge.config import BridgeConfig
from diffloss.bridge.run import BridgeRun
from diffloss.errors import DifflossError
from diffloss.io import write_json_atomic, write_text_atomic

CHECKPOINT = "checkpoint.safetensors"
EVAL_SEED_OFFSET = 1_000_003  # evaluation at iteration i draws with seed + EVAL_SEED_OFFSET + i


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


def train_bridge(
    cfg: BridgeConfig, out: str | Path, *, resume: bool = False, quiet: bool = False, device: str = "cpu"
) -> dict[str, Any]:
    """Train (or with ``resume`` continue) a run in ``out`` on ``device``; writes and returns ``metrics.json``.

    The device is not part of the configuration: a run may be resumed on another device (not bitwise identically)."""
    check_device(device)
    out = Path(out)
    ckpt = out / CHECKPOINT
    if resume and ckpt.exists():
        run = BridgeRun.load(ckpt, device)
        if run.cfg != cfg:
            diff = [k for k, v in cfg.to_dict().items() if run.cfg.to_dict()[k] != v]
            raise DifflossError(f"--resume: the checkpoint in {out} has other {', '.join(diff)}; use the same options")
    else:
        run = BridgeRun(cfg, device)
    write_json_atomic(out / "config.json", cfg.to_dict())
    log_path = out / "metrics.jsonl"
    kept = [ln for ln in _read_lines(log_path) if json.loads(ln)["iteration"] <= run.iteration] if resume else []
    write_text_atomic(log_path, "".join(ln + "\n" for ln in kept))
    run.save(ckpt)
    eval_seed = cfg.seed + EVAL_SEED_OFFSET
    diverged_at, losses = None, []
    bar = tqdm(total=cfg.iters, initial=run.iteration, disable=quiet, file=sys.stderr, desc=f"{cfg.sampler.sampler}")
    while run.iteration < cfg.iters:
        attempted = run.iteration + 1
        loss, ok = run.step()
        if not ok:
            diverged_at = attempted
            bar.close()
            run = BridgeRun.load(ckpt, device)
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
    """Re-evaluate the last good checkpoint of a run directory on n fresh trajectories (``bridge eval``)."""
    if n < 2:
        raise DifflossError(f"--n must be >= 2, got {n}")
    run = BridgeRun.load(Path(run_dir) / CHECKPOINT)
    return {**run.evaluate(n, seed), "iteration": run.iteration, "config": run.cfg.to_dict()}


__all__ = ["CHECKPOINT", "EVAL_SEED_OFFSET", "check_device", "evaluate_checkpoint", "train_bridge"]
