"""CPU cost of the bridge benchmark grid per target, to size a budget preset for this machine.

For every (target, sampler, loss) of the grid, time a few training steps and one final evaluation at the preset's
budget (batch, K steps, eval samples) on one thread, with CPU time (``time.process_time``: insensitive to other
processes sharing the cores), and extrapolate the CPU time of one cell and of the whole grid (× seeds). Writes
benchmarks/results/bridge_bench_timing.{json,md}.

Usage: PYTHONPATH=src python benchmarks/bridge_bench_timing.py [--preset small] [--steps-timed 3] [--targets a,b]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffloss.bridge import BRIDGE_SAMPLERS, BridgeRun, make_config
from diffloss.bridge.bench import DEFAULT_LOSSES, DEFAULT_TARGETS, get_preset

RESULTS = Path(__file__).parent / "results"


def cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def time_cell(target: str, sampler: str, loss: str, budget, n_steps: int) -> dict:
    """CPU seconds per training step (mean of ``n_steps`` after one warm-up) and of one evaluation."""
    cfg = make_config(
        target,
        sampler,
        steps=budget.steps,
        loss=loss,
        iters=budget.iterations,
        batch=budget.batch,
        lr=budget.learning_rate,
        eval_every=0,
        eval_n=budget.eval_samples,
    )
    run = BridgeRun(cfg)
    run.step()  # warm-up (lazy caches, allocator)
    step = cpu_seconds(lambda: [run.step() for _ in range(n_steps)]) / n_steps
    evaluation = cpu_seconds(lambda: run.evaluate(budget.eval_samples, 0))
    return {"step_s": step, "eval_s": evaluation, "cell_s": budget.iterations * step + evaluation}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps-timed", type=int, default=3)
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    preset = get_preset(args.preset)
    rows = []
    for target in args.targets.split(","):
        budget = preset.budget_for(target)
        for sampler in BRIDGE_SAMPLERS:
            for loss in DEFAULT_LOSSES:
                row = {
                    "target": target,
                    "sampler": sampler,
                    "loss": loss,
                    **time_cell(target, sampler, loss, budget, args.steps_timed),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    per_target = {}
    for target in dict.fromkeys(r["target"] for r in rows):
        cells = [r for r in rows if r["target"] == target]
        b = preset.budget_for(target)
        per_target[target] = {
            "iterations": b.iterations,
            "batch": b.batch,
            "steps": b.steps,
            "eval_samples": b.eval_samples,
            "cpu_s_per_seed_all_cells": sum(r["cell_s"] for r in cells),
            "cpu_s_all_seeds": len(preset.seeds) * sum(r["cell_s"] for r in cells),
        }
    total = sum(t["cpu_s_all_seeds"] for t in per_target.values())
    result = {
        "preset": preset.name,
        "threads": 1,
        "steps_timed": args.steps_timed,
        "cells": rows,
        "per_target": per_target,
        "grid_cpu_hours": total / 3600,
        "grid_hours_on_2_cores": total / 7200,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"bridge_bench_timing_{preset.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# Bridge benchmark cost, preset `{preset.name}` (CPU seconds, one thread)",
        "",
        "| target | iterations | batch | K | CPU s per seed (9 cells) | CPU s, all seeds |",
        "|---|---|---|---|---|---|",
    ]
    for target, t in per_target.items():
        lines.append(
            f"| {target} | {t['iterations']} | {t['batch']} | {t['steps']} | "
            f"{t['cpu_s_per_seed_all_cells']:.0f} | {t['cpu_s_all_seeds']:.0f} |"
        )
    lines += [
        "",
        f"Whole grid: {result['grid_cpu_hours']:.2f} CPU hours = {result['grid_hours_on_2_cores']:.2f} h on 2 cores.",
    ]
    (RESULTS / f"bridge_bench_timing_{preset.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
