"""Training a bridge sampler (``train_bridge``): RAdam chains (``diffloss.bridge.chains``), each clipped at 1 with a
cosine decay; checkpoints, divergence stop;
and re-evaluating a finished run (``evaluate_checkpoint``).

A run directory holds ``config.json`` (the ``BridgeConfig``), ``metrics.jsonl`` (one evaluation per line, with the
SDE state of ``diffloss.bridge.monitor.sde_state``), ``checkpoint.safetensors`` (the last good state, see
``diffloss.bridge.run``), ``best.safetensors`` (the state of the best evaluated ELBO) and at the end
``metrics.json`` (the final evaluation, ``diffloss.bridge.evaluate``, with "iterations", "diverged_at",
"divergence" and "best", the best evaluation); the contract of ``diffloss bridge train`` (docs/design.md, section
'Bridge samplers').

Divergence: a non-finite loss, R or parameter ("non-finite"), or an evaluation that exploded
(``diffloss.bridge.monitor.exploded``: its ELBO collapsed below the run's best, "elbo collapse", or CMCD's Langevin
step times the curvature at its samples, logged as "euler_curvature", reached the Euler stability bound 2,
"unstable step"), stops the run; the last good checkpoint is reloaded and evaluated. A final evaluation that exploded
(a non-finite final ELBO included) sets "diverged_at" to the last iteration too (nothing earlier to reload than the
best checkpoint, which "best" reports).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from diffloss.bridge.config import BridgeConfig
from diffloss.bridge.monitor import EXPLOSIONS, euler_curvature, exploded, sde_state
from diffloss.bridge.run import BridgeRun
from diffloss.device import resolve_device
from diffloss.errors import DifflossError
from diffloss.io import write_json_atomic, write_text_atomic

CHECKPOINT = "checkpoint.safetensors"
BEST_CHECKPOINT = "best.safetensors"
EVAL_SEED_OFFSET = 1_000_003  # evaluation at iteration i draws with seed + EVAL_SEED_OFFSET + i


def check_device(device: str) -> str:
    """The device named by ``--device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; ``diffloss.device.resolve_device``)
    as a string such as ``"cpu"`` or ``"cuda:0"``, checked against this machine; else a DifflossError."""
    return str(resolve_device(device))


def train_bridge(
    cfg: BridgeConfig, out: str | Path, *, resume: bool = False, quiet: bool = False, device: str = "cpu"
) -> dict[str, Any]:
    """Train (or with ``resume`` continue) a run in ``out`` on ``device``; writes and returns ``metrics.json``.

    The device is not part of the configuration: a run may be resumed on another device (not bitwise identically)."""
    device = check_device(device)
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
    best = max((r for r in map(json.loads, kept) if r.get("elbo") is not None), key=lambda r: r["elbo"], default=None)
    diverged_at, divergence, losses = None, None, []
    bar = tqdm(total=cfg.iters, initial=run.iteration, disable=quiet, file=sys.stderr, desc=f"{cfg.sampler.sampler}")
    while run.iteration < cfg.iters:
        attempted = run.iteration + 1
        loss, ok = run.step()
        row = None
        if ok:
            losses.append(loss)
            bar.update(1)
        if ok and _due(cfg.eval_every, run.iteration, cfg.iters):
            lrs = run.learning_rates()
            row = {"iteration": run.iteration, "train_loss": sum(losses) / len(losses), "lr": next(iter(lrs.values()))}
            if len(lrs) > 1:
                row["chain_lr"] = lrs
            row.update(_evaluation(run, cfg.eval_n, eval_seed + run.iteration))
            losses = []
            _append_line(log_path, json.dumps(row))
            divergence = exploded(row, best["elbo"] if best else None)
            ok = divergence is None
        if not ok:
            diverged_at, divergence = attempted, divergence or "non-finite"
            bar.close()
            run = BridgeRun.load(ckpt, device)
            what = EXPLOSIONS.get(divergence, "non-finite loss, R or parameter")
            print(
                f"diverged: {what} at iteration {diverged_at}; "
                f"kept the last good checkpoint (iteration {run.iteration}) and evaluated it",
                file=sys.stderr,
            )
            break
        if row is not None:
            bar.set_postfix(elbo=f"{row['elbo']:.3f}", log_z=f"{row['log_z']:.3f}")
            run.save(ckpt)
            best = _keep_best(run, row, best, out)
        elif _due(cfg.ckpt_every, run.iteration, cfg.iters):
            run.save(ckpt)
    bar.close()
    if diverged_at is None:
        run.save(ckpt)
    final = {"iteration": run.iteration, **_evaluation(run, cfg.eval_n, eval_seed + run.iteration)}
    _append_line(log_path, json.dumps(final))
    reason = exploded(final, best["elbo"] if best else None)
    if diverged_at is None and reason is not None:
        diverged_at, divergence = run.iteration, reason
    elif final["elbo"] is not None:
        best = _keep_best(run, final, best, out)
    result = {k: v for k, v in final.items() if k != "iteration"}
    result.update(iterations=run.iteration, diverged_at=diverged_at, divergence=divergence, best=best)
    write_json_atomic(out / "metrics.json", result)
    return result


def _evaluation(run: BridgeRun, n: int, seed: int) -> dict[str, Any]:
    """The evaluation of the current state on n fresh trajectories drawn with ``seed``, with its SDE state and the
    Euler stability estimate ``euler_curvature`` (on a generator of the same seed of its own)."""
    curvature = euler_curvature(run.model, run.target, torch.Generator(run.device).manual_seed(seed))
    return {**run.evaluate(n, seed), **sde_state(run.model), "euler_curvature": curvature}


def _keep_best(run: BridgeRun, row: dict[str, Any], best: dict[str, Any] | None, out: Path) -> dict[str, Any] | None:
    """The better of ``best`` and the evaluation ``row`` of the current state; a better row's state goes to
    ``out/best.safetensors``. Rows with a non-finite ELBO (None) never are the best."""
    if row["elbo"] is None or (best is not None and row["elbo"] <= best["elbo"]):
        return best
    run.save(out / BEST_CHECKPOINT)
    return row


def _due(every: int, iteration: int, iters: int) -> bool:
    """Whether a periodic action (every ``every`` iterations, 0 = never) falls on ``iteration`` before the last one
    (the end of training evaluates and saves anyway)."""
    return every > 0 and iteration % every == 0 and iteration < iters


def _read_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []


def _append_line(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def evaluate_checkpoint(run_dir: str | Path, n: int, seed: int, best: bool = False) -> dict[str, Any]:
    """Re-evaluate the last good checkpoint of a run directory (``best``: the best-ELBO one) on n fresh
    trajectories (``bridge eval``)."""
    if n < 2:
        raise DifflossError(f"--n must be >= 2, got {n}")
    run = BridgeRun.load(Path(run_dir) / (BEST_CHECKPOINT if best else CHECKPOINT))
    return {**run.evaluate(n, seed), "iteration": run.iteration, "config": run.cfg.to_dict()}


__all__ = ["BEST_CHECKPOINT", "CHECKPOINT", "EVAL_SEED_OFFSET", "check_device", "evaluate_checkpoint", "train_bridge"]
