"""Sampling with and without ``--compile`` on this CPU: wall seconds of ``sample_model`` for a UNet on MNIST-sized
images and an MLP on 2-D data, eager against ``torch.compile`` of the network.

Each case runs ``sample_model`` twice per mode in one process: the first call includes the compilation (the cost a
one-off ``diffloss sample --compile`` pays), the second is the steady state (what a long sampling job approaches).
Random weights: the speed does not depend on training. Wall seconds and the process's CPU seconds
(``time.process_time``) are both recorded; on a machine shared with other jobs the wall times swing with the load
(its 1-minute average is in the table) and the one-thread CPU seconds are the comparison to trust. Inductor
compiles in worker processes, so the first compiled call's CPU seconds omit most of the compilation.

Usage: PYTHONPATH=src python benchmarks/sample_compile.py [--threads 1] [--n 64] [--steps 10]
Writes benchmarks/results/sample_compile.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from functools import partial
from pathlib import Path

import torch

from diffloss.device import set_threads
from diffloss.io import write_json_atomic, write_text_atomic
from diffloss.loader import DiffusionModel
from diffloss.models import Denoiser
from diffloss.process import get_process
from diffloss.sample import sample_model
from diffloss.target import get_target

CASES = {  # name: (backbone, per-sample shape)
    "unet-tiny 1x28x28": ({"name": "unet", "preset": "tiny", "channels": None}, (1, 28, 28)),
    "mlp 256x3 2-d": ({"name": "mlp", "width": 256, "depth": 3}, (2,)),
}


def model_of(backbone: dict, shape: tuple[int, ...]) -> DiffusionModel:
    torch.manual_seed(0)
    process, target = get_process("edm"), get_target("x0")
    net = Denoiser(backbone, shape, process, 0.5, "edm", target).eval().requires_grad_(False)
    return DiffusionModel(net, process, target, shape)


def seconds(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def table_row(r: dict) -> str:
    return (
        f"| {r['case']} | {r['eager_first_wall_s']} s | {r['eager_steady_wall_s']} / {r['eager_steady_cpu_s']} s | "
        f"{r['compile_first_wall_s']} s | {r['compile_steady_wall_s']} / {r['compile_steady_cpu_s']} s | "
        f"{r['speedup_cpu']}x ({r['speedup_wall']}x) | {r['load_eager']}, {r['load_compile']} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sample_compile"))
    a = ap.parse_args()
    threads = set_threads(a.threads)
    rows = []
    for case, (backbone, shape) in CASES.items():
        model = model_of(backbone, shape)
        row: dict = {"case": case}
        for mode in ("eager", "compile"):
            draw = partial(sample_model, model, a.n, steps=a.steps, sampler="heun", seed=0, compile=mode == "compile")
            row[f"load_{mode}"] = round(os.getloadavg()[0], 2)
            for call in ("first", "steady"):
                wall, cpu = seconds(draw)
                row[f"{mode}_{call}_wall_s"], row[f"{mode}_{call}_cpu_s"] = round(wall, 3), round(cpu, 3)
        row["speedup_cpu"] = round(row["eager_steady_cpu_s"] / row["compile_steady_cpu_s"], 3)
        row["speedup_wall"] = round(row["eager_steady_wall_s"] / row["compile_steady_wall_s"], 3)
        rows.append(row)
        print(row, flush=True)
    result = {"benchmark": "sampling, eager vs torch.compile", "sampler": "heun", "n": a.n, "steps": a.steps,
              "network_calls": 2 * a.steps - 1, "threads": threads, "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "results": rows}  # fmt: skip
    write_json_atomic(a.out + ".json", result)
    lines = [
        f"# Sampling with and without --compile: heun, {a.n} samples, {a.steps} steps "
        f"({2 * a.steps - 1} network calls)",
        "",
        f"torch {torch.__version__}, {threads} thread(s) on a {os.cpu_count()}-core CPU machine shared with other jobs "
        "(1-minute load average before the eager and the compiled runs). 'first' is the first call (with the "
        "compilation: its wall time), 'steady' a second call; CPU = this process's CPU seconds, the comparison that "
        "does not depend on the other jobs.",
        "",
        "| network | eager first wall | eager steady wall / CPU | compile first wall | compile steady wall / CPU | "
        "steady speed-up CPU (wall) | load avg |",
        "|---|---|---|---|---|---|---|",
        *(table_row(r) for r in rows),
        "",
    ]
    write_text_atomic(a.out + ".md", "\n".join(lines))


if __name__ == "__main__":
    main()
