"""Speed and memory of the exact optimal-loss estimator on MNIST train (50k x 784), 32 levels, 10k queries.

(a) diffloss: ``exact_optimal_loss`` (all 32 levels from one pair of Gram products per chunk);
(b) naive baseline: per level, float64 cdist(x_t, Y) + softmax + (P . Y), level by level — timed on a subset
    of queries and levels and scaled linearly to the full run (said in the output);
(c) roofline: two fp32 GEMMs (Q x D) . (D x N) plus 32 softmax passes over Q x N (in query blocks),
    timed here: the work any exact method must do.

Each part runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its own.
Goals: (a) <= 1.25 x (c) and (a) >= 10 x faster than (b).

    PYTHONPATH=src python benchmarks/optimal_loss.py [--queries 10000] [--threads 1]

Writes benchmarks/results/optimal_loss.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from diffloss.data import load_dataset
from diffloss.io import write_json_atomic, write_text_atomic
from diffloss.levels import log_spaced

RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = 32
BLOCK = 256  # queries per block in (b) and (c)


class _Clock:
    """Wall and process CPU time since creation (CPU time is robust to other jobs on a shared machine)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> dict:
        return {"seconds": time.perf_counter() - self.wall, "cpu_seconds": time.process_time() - self.cpu}


def _queries(x: np.ndarray, q: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(x[rng.integers(0, len(x), q)]), torch.from_numpy(
        rng.standard_normal((q, x.shape[1]), dtype=np.float32)
    )


def part_a(x: np.ndarray, sigmas: np.ndarray, q: int) -> dict:
    from diffloss.optimal.exact import exact_optimal_loss

    clock = _Clock()
    r = exact_optimal_loss(x, sigmas, queries=q, seed=0)
    return {**clock.read(), "x0_mse_mid": float(r.x0_mse[LEVELS // 2])}


def part_b(x: np.ndarray, sigmas: np.ndarray, q: int, q_sub: int, levels_sub: list[int]) -> dict:
    y = torch.from_numpy(x).double()
    x0, eps = _queries(x, q_sub)
    x0, eps = x0.double(), eps.double()
    clock = _Clock()
    for k in levels_sub:
        s = float(sigmas[k])
        for lo in range(0, q_sub, BLOCK):
            xt = x0[lo : lo + BLOCK] + s * eps[lo : lo + BLOCK]
            w = torch.softmax(-torch.cdist(xt, y).pow_(2) / (2 * s * s), 1)
            ((x0[lo : lo + BLOCK] - w @ y) ** 2).mean(1)
    measured = clock.read()
    scale = (q / q_sub) * (LEVELS / len(levels_sub))
    return {
        "seconds": measured["seconds"] * scale,
        "cpu_seconds": measured["cpu_seconds"] * scale,
        "measured_seconds": measured["seconds"],
        "measured_queries": q_sub,
        "measured_levels": [float(sigmas[k]) for k in levels_sub],
        "scale_factor": scale,
    }


def part_c(x: np.ndarray, q: int) -> dict:
    y = torch.from_numpy(x)
    x0, eps = _queries(x, q)
    clock = _Clock()
    for lo in range(0, q, BLOCK):
        g0 = x0[lo : lo + BLOCK] @ y.T
        ge = eps[lo : lo + BLOCK] @ y.T
        for k in range(LEVELS):
            torch.softmax(g0 if k % 2 else ge, 1)
    return clock.read()


def run_part(name: str, args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    x = load_dataset("mnist").x
    sigmas = np.asarray(log_spaced(LEVELS))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if name == "a":
        out = part_a(x, sigmas, args.queries)
    elif name == "b":
        out = part_b(x, sigmas, args.queries, args.naive_queries, [LEVELS // 4, LEVELS // 2, 3 * LEVELS // 4])
    else:
        out = part_c(x, args.queries)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {**out, "peak_rss_mb": rss / 1024, "rss_after_loading_data_mb": rss0 / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=10000)
    ap.add_argument("--naive-queries", type=int, default=512, help="queries actually timed for (b)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per part (1: the machine is shared)")
    ap.add_argument("--part", choices=["a", "b", "c"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        print(json.dumps(run_part(args.part, args)))
        return
    parts = {}
    for name in ("c", "a", "b"):
        cmd = [sys.executable, __file__, "--part", name, "--queries", str(args.queries)]
        cmd += ["--naive-queries", str(args.naive_queries), "--threads", str(args.threads)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        parts[name] = json.loads(res.stdout.strip().splitlines()[-1])
        print(name, parts[name], flush=True)
    a, b, c = (parts[k]["cpu_seconds"] for k in "abc")
    wall = {k: parts[k]["seconds"] for k in "abc"}
    doc = {
        "data": "mnist train 50000 x 784",
        "levels": LEVELS,
        "queries": args.queries,
        "threads": args.threads,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads "
        f"available; shared with other jobs (timings are noisy; the ratios are what matter)",
        "torch": torch.__version__,
        "a_diffloss_exact": parts["a"],
        "b_naive_float64_per_level": parts["b"],
        "c_roofline_2gemm_32softmax": parts["c"],
        "ratio_a_over_c": a / c,
        "speedup_a_over_b": b / a,
        "wall_ratio_a_over_c": wall["a"] / wall["c"],
        "wall_speedup_a_over_b": wall["b"] / wall["a"],
        "goal_a_le_1_25c": a <= 1.25 * c,
        "goal_10x_faster_than_b": b >= 10 * a,
    }
    RESULTS.mkdir(exist_ok=True)
    write_json_atomic(RESULTS / "optimal_loss.json", doc)
    write_text_atomic(RESULTS / "optimal_loss.md", _markdown(doc))
    print(_markdown(doc))


def _markdown(doc: dict) -> str:
    a, b, c = doc["a_diffloss_exact"], doc["b_naive_float64_per_level"], doc["c_roofline_2gemm_32softmax"]
    return "\n".join(
        [
            "# Benchmark: exact optimal loss on MNIST",
            "",
            f"{doc['data']}, {doc['levels']} levels (s log-spaced over 0.002–80), {doc['queries']} queries, "
            f"{doc['threads']} torch thread(s) per part, torch {doc['torch']}. Machine: {doc['machine']}.",
            "Command: `PYTHONPATH=src python benchmarks/optimal_loss.py`.",
            "",
            "| part | CPU seconds | wall seconds | peak RSS (MB) |",
            "|---|---|---|---|",
            f"| (a) diffloss exact | {a['cpu_seconds']:.1f} | {a['seconds']:.1f} | {a['peak_rss_mb']:.0f} |",
            f"| (b) naive float64 per level (cdist + softmax + matmul), scaled | {b['cpu_seconds']:.0f} | "
            f"{b['seconds']:.0f} | {b['peak_rss_mb']:.0f} |",
            f"| (c) roofline: 2 fp32 GEMMs + {doc['levels']} softmax passes | {c['cpu_seconds']:.1f} | "
            f"{c['seconds']:.1f} | {c['peak_rss_mb']:.0f} |",
            "",
            f"(b) was timed on {b['measured_queries']} queries at levels "
            f"{', '.join(f'{s:.3g}' for s in b['measured_levels'])} ({b['measured_seconds']:.1f} s) and scaled "
            f"by {b['scale_factor']:.1f} to {doc['queries']} queries x {doc['levels']} levels.",
            f"Peak RSS includes the data (RSS after loading it: {a['rss_after_loading_data_mb']:.0f} MB).",
            "",
            "Ratios use CPU time (each part is single-threaded, so CPU time is the work done, unaffected by "
            "other jobs); wall-clock ratios are given for reference.",
            "",
            f"- (a) / (c) = **{doc['ratio_a_over_c']:.2f}** (wall {doc['wall_ratio_a_over_c']:.2f}; goal ≤ 1.25: "
            f"{'met' if doc['goal_a_le_1_25c'] else 'not met'})",
            f"- (b) / (a) = **{doc['speedup_a_over_b']:.0f}x** (wall {doc['wall_speedup_a_over_b']:.0f}x; goal ≥ 10x: "
            f"{'met' if doc['goal_10x_faster_than_b'] else 'not met'})",
            "",
        ]
    )


if __name__ == "__main__":
    main()
