"""Sampling with and without ``--compile`` on this CPU: wall seconds of ``sample_model`` for a UNet on MNIST-sized
images and an MLP on 2-D data, eager against ``torch.compile`` of the network.

Each case runs ``sample_model`` twice per mode in one process: the first call includes the compilation (the cost a
one-off ``diffloss sample --compile`` pays), the second is the steady state (what a long sampling job approaches).
Random weights: the speed does not depend on training. The machine's 1-minute load average is recorded with the
numbers: on a shared machine they are a lower bound.

Usage: PYTHONPATH=src python benchmarks/sample_compile.py [--threads 0] [--n 64] [--steps 10]
Writes benchmarks/results/sample_compile.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
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


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sample_compile"))
    a = ap.parse_args()
    threads = set_threads(a.threads)
    rows = []
    for case, (backbone, shape) in CASES.items():
        model = model_of(backbone, shape)
        times = {}
        for mode in ("eager", "compile"):
            draw = lambda: sample_model(model, a.n, steps=a.steps, sampler="heun", seed=0, compile=mode == "compile")  # noqa: E731
            load = os.getloadavg()[0]
            times[mode] = (seconds(draw), seconds(draw), load)
        eager, compiled = times["eager"], times["compile"]
        rows.append({
            "case": case,
            "eager_first_s": round(eager[0], 3), "eager_s": round(eager[1], 3),
            "compile_first_s": round(compiled[0], 3), "compile_s": round(compiled[1], 3),
            "speedup_steady": round(eager[1] / compiled[1], 3),
            "load_avg_1min": [round(eager[2], 2), round(compiled[2], 2)],
        })  # fmt: skip
        print(rows[-1], flush=True)
    result = {"benchmark": "sampling, eager vs torch.compile", "sampler": "heun", "n": a.n, "steps": a.steps,
              "network_calls": 2 * a.steps - 1, "threads": threads, "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "results": rows}  # fmt: skip
    write_json_atomic(a.out + ".json", result)
    lines = [
        f"# Sampling with and without --compile: heun, {a.n} samples, {a.steps} steps ({2 * a.steps - 1} network calls)",
        "",
        f"torch {torch.__version__}, {threads} thread(s) on a {os.cpu_count()}-core CPU machine shared with other jobs "
        "(1-minute load average before the eager and the compiled runs in the table). Wall seconds; 'first' includes "
        "the compilation, the other column is a second call (steady state).",
        "",
        "| network | eager first (s) | eager (s) | compile first (s) | compile (s) | steady speed-up | load avg |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['case']} | {r['eager_first_s']} | {r['eager_s']} | {r['compile_first_s']} | {r['compile_s']} | "
          f"{r['speedup_steady']}x | {r['load_avg_1min']} |" for r in rows),  # fmt: skip
        "",
    ]
    write_text_atomic(a.out + ".md", "\n".join(lines))


if __name__ == "__main__":
    main()
