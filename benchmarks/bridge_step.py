"""Training steps per second of a bridge sampler: CMCD on GMM40 (d=50), batch 2000, K=128, eager vs torch.compile.

One step = simulate a batch, the loss (rKL-LD by default: detached path, log-derivative surrogate), backward, RAdam.
``torch.compile`` is applied to the control network (the part called 2K+1 times per step); the K-step loop stays in
Python. The machine's load average is recorded with the numbers: on a shared machine they are a lower bound.

Usage: python benchmarks/bridge_step.py [--batch 2000] [--steps 128] [--loss rkl-ld] [--repeats 3] [--threads 1]
Writes benchmarks/results/bridge_step.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from diffloss.bridge import BridgeRun, make_config
from diffloss.io import write_json_atomic, write_text_atomic


def steps_per_second(run: BridgeRun, repeats: int) -> tuple[float, float]:
    """(seconds of the first, warm-up step, steps per second over ``repeats`` further steps)."""
    t0 = time.perf_counter()
    run.step()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        run.step()
    return first, repeats / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="gmm40")
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--loss", default="rkl-ld")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bridge_step"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for mode in ("eager", "compile"):
        cfg = make_config(a.target, "cmcd", steps=a.steps, loss=a.loss, batch=a.batch, iters=a.repeats + 1)
        run = BridgeRun(cfg)
        if mode == "compile":
            run.model.net.compile()
        load_before = os.getloadavg()[0]
        first, sps = steps_per_second(run, a.repeats)
        rows.append(
            {
                "mode": mode,
                "first_step_s": round(first, 3),
                "steps_per_s": round(sps, 4),
                "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            }
        )
        print(rows[-1], flush=True)
    result = {
        "benchmark": "bridge training step",
        "sampler": "cmcd",
        "target": a.target,
        "dim": run.target.dim,
        "batch": a.batch,
        "steps_K": a.steps,
        "loss": a.loss,
        "threads": a.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "results": rows,
    }
    write_json_atomic(a.out + ".json", result)
    lines = [
        f"# Bridge training step: CMCD, {a.target} (d={run.target.dim}), batch {a.batch}, K={a.steps}, loss {a.loss}",
        "",
        f"torch {torch.__version__}, {a.threads} thread(s) on a {os.cpu_count()}-core CPU machine shared with other "
        "jobs (1-minute load average before/after in the table).",
        "",
        "| mode | first step (s) | steps/s | load avg |",
        "|---|---|---|---|",
        *(f"| {r['mode']} | {r['first_step_s']} | {r['steps_per_s']} | {r['load_avg_1min']} |" for r in rows),
        "",
    ]
    write_text_atomic(a.out + ".md", "\n".join(lines))


if __name__ == "__main__":
    main()
