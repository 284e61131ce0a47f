"""Speed and memory of the exact optimal-loss estimator against its roofline, on a CPU or a CUDA GPU.

Cases (``CASES``): MNIST train (50k x 784, 32 levels log-spaced over 0.002-80, 10k queries); ``clustered``, a
synthetic 20,000 x 256 array of 200 Gaussian clusters with 16 levels over 0.5-20, where no level can be skipped
(every query's far rows carry weight at every level); on CUDA also ``cifar``, a synthetic 50,000 x 3072
clustered array (32 levels, 10k queries), and the J* curve of an ImageNet-64-sized synthetic set
(1,281,167 x 12,288, 32 levels, automatic query count), stored on the GPU in bf16 (31.5 GB; the data are then
exactly those bf16 values, computed on in fp32 chunk by chunk), with its wall time.

Parts, each in its own subprocess (so that its peak resident memory is its own):
(a) diffloss: ``exact_optimal_loss`` with default settings (every core; on CUDA the device default chunking);
(b) naive baseline (CPU, MNIST): per level, float64 cdist(x_t, Y) + softmax + (P . Y), timed on a subset of
    queries and levels and scaled linearly to the full run;
(c) roofline: the two fp32 GEMMs (Q x D) . (D x N) plus one softmax pass over Q x N per level (in blocks of
    256 queries), timed with the same threads on the same device: the work any exact method must do, at the
    machine's measured GEMM rate and softmax bandwidth.
On the CPU, ``clustered`` also runs (a) and (c) on one thread and (a) as 2 row-sharded worker processes of one
thread each (``--workers 2``), which decides the default (threads or workers); its parts run in ``--rounds``
interleaved rounds and its ratios are medians of per-round ratios. Ratios are wall-clock (all parts use every
core); the 1-minute load average before and after each part is recorded (the machine is shared).

    PYTHONPATH=src python benchmarks/optimal_loss.py                 # CPU: results/optimal_loss.{json,md}
    PYTHONPATH=src python benchmarks/optimal_loss.py --device cuda   # GPU: results/optimal_loss_cuda.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffloss.io import write_json_atomic, write_text_atomic
from diffloss.levels import log_spaced

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 256  # queries per block in (b) and (c)
IMAGENET = (1_281_167, 12_288)


@dataclass(frozen=True)
class Case:
    name: str
    rows: int
    dim: int
    sigmas: tuple[float, ...]
    queries: int

    def data(self, device: str = "cpu", dtype: torch.dtype = torch.float32) -> np.ndarray | torch.Tensor:
        """The rows: MNIST from the loader (host), else ``clustered`` (host, or on ``device`` in ``dtype``)."""
        if self.name == "mnist":
            from diffloss.data import load_dataset

            return load_dataset("mnist").x
        if device == "cpu" and dtype == torch.float32:
            return clustered(self.rows, self.dim).numpy()
        return clustered(self.rows, self.dim, device=device, dtype=dtype)


def clustered(
    n: int, dim: int, clusters: int = 200, spread: float = 0.25, seed: int = 0, device: str = "cpu",
    dtype: torch.dtype = torch.float32, chunk_rows: int = 65536,
) -> torch.Tensor:  # fmt: skip
    """n rows around ``clusters`` N(0, I) centers with N(0, spread^2 I) offsets, generated on ``device`` chunk by
    chunk (a 1.28M x 12288 bf16 set never exists in fp32 at once)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    centers = torch.randn(clusters, dim, generator=gen, device=device)
    out = torch.empty(n, dim, dtype=dtype, device=device)
    for lo in range(0, n, chunk_rows):
        hi = min(n, lo + chunk_rows)
        pick = torch.randint(clusters, (hi - lo,), generator=gen, device=device)
        out[lo:hi] = centers[pick] + spread * torch.randn(hi - lo, dim, generator=gen, device=device)
    return out


CASES = {
    "mnist": Case("mnist", 50_000, 784, tuple(log_spaced(32)), 10_000),
    "clustered": Case("clustered", 20_000, 256, tuple(np.geomspace(0.5, 20, 16).tolist()), 4_000),
    "cifar": Case("cifar", 50_000, 3072, tuple(log_spaced(32)), 10_000),
}


class _Clock:
    """Wall and process CPU time since creation, after the device's queued work (``sync``)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._sync()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def read(self) -> dict:
        self._sync()
        return {"seconds": time.perf_counter() - self.wall, "cpu_seconds": time.process_time() - self.cpu}


def _queries(n: int, dim: int, q: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    idx = torch.from_numpy(rng.integers(0, n, q)).to(device)
    return idx, torch.from_numpy(rng.standard_normal((q, dim), dtype=np.float32)).to(device)


def part_a(x, sigmas: np.ndarray, queries: int | None, device: torch.device, workers: int = 1) -> dict:
    """diffloss, default settings (``workers`` > 1: row shards in that many CPU processes)."""
    from diffloss.optimal.sharded import spawn_optimal_loss

    load = _Clock(device)
    if device.type == "cpu":
        import diffloss.optimal.kernel  # noqa: F401  (numba; its compiled code is loaded once per process)
    kernel_load = load.read()["seconds"]
    clock = _Clock(device)
    r = spawn_optimal_loss(x, sigmas, workers=workers, threads=1 if workers > 1 else 0, queries=queries,
                           device=device)  # fmt: skip
    mid = len(sigmas) // 2
    return {**clock.read(), "kernel_load_seconds": kernel_load, "queries_used": r.n_queries,
            "x0_mse_mid": float(r.x0_mse[mid]), "sigmas": sigmas.tolist(), "x0_mse": r.x0_mse.tolist(),
            "stderr": r.stderr.tolist()}  # fmt: skip


def part_b(x: np.ndarray, sigmas: np.ndarray, q: int, q_sub: int, levels_sub: list[int]) -> dict:
    """Naive float64 per-level baseline, timed on ``q_sub`` queries at ``levels_sub`` and scaled to the run."""
    y = torch.from_numpy(x).double()
    idx, eps = _queries(len(x), x.shape[1], q_sub, torch.device("cpu"))
    x0, eps = y[idx], eps.double()
    clock = _Clock(torch.device("cpu"))
    for k in levels_sub:
        s = float(sigmas[k])
        for lo in range(0, q_sub, BLOCK):
            xt = x0[lo : lo + BLOCK] + s * eps[lo : lo + BLOCK]
            w = torch.softmax(-torch.cdist(xt, y).pow_(2) / (2 * s * s), 1)
            ((x0[lo : lo + BLOCK] - w @ y) ** 2).mean(1)
    measured = clock.read()
    scale = (q / q_sub) * (len(sigmas) / len(levels_sub))
    return {
        "seconds": measured["seconds"] * scale,
        "cpu_seconds": measured["cpu_seconds"] * scale,
        "measured_seconds": measured["seconds"],
        "measured_queries": q_sub,
        "measured_levels": [float(sigmas[k]) for k in levels_sub],
        "scale_factor": scale,
    }


def part_c(x, levels: int, q: int, device: torch.device) -> dict:
    """Roofline: the two fp32 GEMMs and ``levels`` softmax passes per block of queries, on ``device``."""
    y = x.to(device=device, dtype=torch.float32) if isinstance(x, torch.Tensor) else torch.from_numpy(x).to(device)
    idx, eps = _queries(len(y), y.shape[1], q, device)
    x0 = y[idx]
    clock = _Clock(device)
    for lo in range(0, q, BLOCK):
        g0 = x0[lo : lo + BLOCK] @ y.T
        ge = eps[lo : lo + BLOCK] @ y.T
        for k in range(levels):
            torch.softmax(g0 if k % 2 else ge, 1)
    return clock.read()


def part_curve(device: torch.device, rows: int, dim: int, levels: int) -> dict:
    """The J* curve of a synthetic ``rows`` x ``dim`` set stored on ``device`` in bf16, default settings."""
    from diffloss.optimal.exact import exact_optimal_loss

    x = clustered(rows, dim, device=str(device), dtype=torch.bfloat16)
    sigmas = np.asarray(log_spaced(levels))
    clock = _Clock(device)
    r = exact_optimal_loss(x, sigmas, device=device)
    return {**clock.read(), "rows": rows, "dim": dim, "storage": "bf16 on the device", "queries_used": r.n_queries,
            "sigmas": sigmas.tolist(), "x0_mse": r.x0_mse.tolist(), "stderr": r.stderr.tolist()}  # fmt: skip


def run_part(args: argparse.Namespace) -> dict:
    """One part (``args.part``) of one case, in this process."""
    from diffloss.device import set_threads

    device = torch.device(args.device)
    set_threads(args.threads)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.part == "curve":
        out = part_curve(device, *IMAGENET, 32) if args.case == "imagenet" else part_curve(device, 20_000, 256, 32)
    else:
        case = CASES[args.case]
        x, sigmas = case.data(args.device), np.asarray(case.sigmas)
        if args.part == "a":
            out = part_a(x, sigmas, case.queries, device, args.workers)
        elif args.part == "b":
            levels = len(sigmas)
            out = part_b(x, sigmas, case.queries, args.naive_queries, [levels // 4, levels // 2, 3 * levels // 4])
        else:
            out = part_c(x, len(sigmas), case.queries, device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {**out, "peak_rss_mb": rss / 1024, "rss_before_mb": rss0 / 1024, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        out["peak_device_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def _spawn(case: str, part: str, device: str, threads: int = 0, workers: int = 1, naive_queries: int = 512) -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--part", part, "--device", device, "--threads", str(threads)]
    cmd += ["--workers", str(workers), "--naive-queries", str(naive_queries)]
    load0 = os.getloadavg()[0]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"{case}/{part} failed:\n{res.stderr[-3000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["load_before_after"] = [load0, os.getloadavg()[0]]
    print(case, part, {k: v for k, v in out.items() if not isinstance(v, list)}, flush=True)
    return out


def cpu_doc(naive_queries: int, rounds: int) -> dict:
    """Every CPU case and part; ratios in wall-clock time. ``clustered`` runs its parts in ``rounds`` interleaved
    rounds (c, a, c1, a1 each in a fresh process), so that a change in the machine's load hits both sides of a
    ratio; its ratios are the medians of the per-round ratios, its table the run with the median time."""
    doc: dict = {"device": "cpu", "cores": os.cpu_count(), "cases": {}, "rounds": rounds}
    runs: dict[str, list[dict]] = {"c": [], "a": [], "c1": [], "a1": []}
    for _ in range(rounds):
        for key in runs:
            runs[key].append(_spawn("clustered", key[0], "cpu", threads=1 if key.endswith("1") else 0))
    seconds = {key: [r["seconds"] for r in rs] for key, rs in runs.items()}
    parts = {key: {**sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2], "rounds_seconds": seconds[key]}
             for key, rs in runs.items()}  # fmt: skip
    parts["aw"] = _spawn("clustered", "a", "cpu", threads=1, workers=2)  # threads or workers: the default

    def per_round(num: str, den: str) -> list[float]:
        return [n / d for n, d in zip(seconds[num], seconds[den])]

    ratios = {"a_over_c": per_round("a", "c"), "a1_over_c1": per_round("a1", "c1"), "a_over_c1": per_round("a", "c1")}
    ratios["a_with_kernel_load_over_c"] = [(r["seconds"] + r["kernel_load_seconds"]) / c
                                           for r, c in zip(runs["a"], seconds["c"])]  # fmt: skip
    doc["cases"]["clustered"] = _entry(CASES["clustered"], parts, {k: statistics.median(v) for k, v in ratios.items()})
    doc["cases"]["clustered"]["ratios_per_round"] = ratios
    doc["cases"]["clustered"]["ratios"]["workers_over_threads"] = parts["aw"]["seconds"] / parts["a"]["seconds"]
    parts = {"c": _spawn("mnist", "c", "cpu"), "a": _spawn("mnist", "a", "cpu")}
    parts["b"] = _spawn("mnist", "b", "cpu", naive_queries=naive_queries)
    ratios = {"a_over_c": parts["a"]["seconds"] / parts["c"]["seconds"]}
    ratios["b_over_a"] = parts["b"]["seconds"] / parts["a"]["seconds"]
    doc["cases"]["mnist"] = _entry(CASES["mnist"], parts, ratios)
    return doc


def _entry(case: Case, parts: dict, ratios: dict) -> dict:
    return {"rows": case.rows, "dim": case.dim, "levels": len(case.sigmas), "queries": case.queries,
            "parts": parts, "ratios": ratios}  # fmt: skip


def cuda_doc() -> dict:
    """MNIST and the CIFAR-sized case against the device roofline, and the ImageNet-64-sized J* curve."""
    doc: dict = {"device": "cuda", "gpu": torch.cuda.get_device_name(0), "cases": {}}
    for name in ("mnist", "cifar"):
        case = CASES[name]
        parts = {"c": _spawn(name, "c", "cuda"), "a": _spawn(name, "a", "cuda")}
        doc["cases"][name] = _entry(case, parts, {"a_over_c": parts["a"]["seconds"] / parts["c"]["seconds"]})
    doc["imagenet_curve"] = _spawn("imagenet", "curve", "cuda")
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--naive-queries", type=int, default=512, help="queries actually timed for (b)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the clustered CPU case")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        print(json.dumps(run_part(args)))
        return
    cuda = args.device.startswith("cuda")
    doc = cuda_doc() if cuda else cpu_doc(args.naive_queries, args.rounds)
    doc["torch"] = torch.__version__
    doc["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    stem = "optimal_loss_cuda" if cuda else "optimal_loss"
    RESULTS.mkdir(exist_ok=True)
    write_json_atomic(RESULTS / f"{stem}.json", doc)
    write_text_atomic(RESULTS / f"{stem}.md", markdown(doc))
    print(markdown(doc))


def markdown(doc: dict) -> str:
    """The results as a markdown page: one table per case and the ratios."""
    gpu = doc["device"] == "cuda"
    where = f"GPU: {doc['gpu']}" if gpu else f"CPU: {doc['machine']}, shared with other jobs"
    lines = [
        "# Benchmark: exact optimal loss against its roofline" + (" on a GPU" if gpu else ""),
        "",
        f"{where}; torch {doc['torch']}. Command: `PYTHONPATH=src python benchmarks/optimal_loss.py"
        + (" --device cuda`." if gpu else "`."),
        "Roofline (c): the two fp32 GEMMs and one softmax pass per level over Q x N (blocks of 256 queries), timed "
        "on the same device with the same threads. Ratios are wall-clock.",
        "",
    ]
    if not gpu:
        lines += [
            f"clustered: {doc['rounds']} interleaved rounds (c, a, c1, a1, each in a fresh process); the table shows "
            "each part's run with the median time (all rounds in the last column), the ratios are the medians of the "
            "per-round ratios. (a) imports its numba kernel before its clock starts, as every part imports torch: "
            "loading the compiled code costs once per process the 'kernel load' below (compiling it, once per "
            "machine, a few seconds more).",
            "",
        ]
    names = {"a": "(a) diffloss exact, default settings", "b": "(b) naive float64 per level, scaled",
             "c": "(c) roofline", "a1": "(a) on 1 thread", "c1": "(c) on 1 thread",
             "aw": "(a) as 2 worker processes x 1 thread"}  # fmt: skip
    for name, case in doc["cases"].items():
        lines += [f"## {name}: {case['rows']} x {case['dim']}, {case['levels']} levels, {case['queries']} queries", ""]
        head = "| part | wall s | CPU s | threads | peak RSS MB | load avg before/after | kernel load s | rounds s |"
        lines += [head, "|---" * 8 + "|"]
        for key, part in case["parts"].items():
            load = "/".join(f"{v:.1f}" for v in part["load_before_after"])
            kernel = f"{part['kernel_load_seconds']:.2f}" if "kernel_load_seconds" in part else ""
            rounds = ", ".join(f"{v:.2f}" for v in part.get("rounds_seconds", []))
            lines.append(f"| {names[key]} | {part['seconds']:.2f} | {part['cpu_seconds']:.2f} | {part['threads']} | "
                         f"{part['peak_rss_mb']:.0f} | {load} | {kernel} | {rounds} |")  # fmt: skip
        lines += [""] + [f"- {k.replace('_', ' ')} = **{v:.2f}**" for k, v in case["ratios"].items()]
        for k, v in case.get("ratios_per_round", {}).items():
            lines.append(f"  - {k.replace('_', ' ')} per round: " + ", ".join(f"{r:.2f}" for r in v))
        lines += [""]
    if gpu:
        c = doc["imagenet_curve"]
        lines += [f"## ImageNet-64-sized J* curve: {c['rows']} x {c['dim']}, {c['storage']}, 32 levels", "",
                  f"Wall time **{c['seconds']:.1f} s** ({c['queries_used']} queries, automatic count; peak device "
                  f"memory {c.get('peak_device_gb', float('nan')):.1f} GB; goal: under 300 s).", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
