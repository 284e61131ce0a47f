"""Training throughput of ``diffloss train`` against a minimal hand-written PyTorch loop, in one run.

Both sides train the same ``UNet2DModel`` (the ``--preset`` of ``diffloss.models``, built from the same seed) on the
same MNIST rows with the same batch and AdamW; the minimal loop draws t ~ U(0, 1), forms the VP-cosine x_t, and
minimises the plain eps-MSE: no EMA, no clipping, no logging, no preconditioning. The diffloss side is ``Run.update``
(the whole update of ``diffloss train``: level density, EDM-style input scaling, weighting, gradient clipping, EMA)
with the default objective (vp-cosine, eps, constant weight, uniform t). The two alternate in rounds
(diffloss, minimal, diffloss, ...) so a change in the machine's load hits both; the ratio is the median over rounds
of (diffloss samples/s) / (minimal samples/s). Goal: >= 0.95, eager and with ``--compile`` (torch.compile of the
network on both sides).

Usage: python benchmarks/train_throughput.py [--preset tiny] [--batch 64] [--rounds 5] [--steps 10] [--threads 0]
                                             [--device auto] [--precision fp32] [--no-compile] [--out PATH]
Writes benchmarks/results/train_throughput.{json,md} (``_cuda`` appended on a GPU).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
from pathlib import Path

import torch

from diffloss.device import autocast, resolve_device, set_matmul_precision, set_threads
from diffloss.io import write_json_atomic, write_text_atomic
from diffloss.runs import per_call
from diffloss.train import Execution, Run, TrainConfig

RESULTS = Path(__file__).parent / "results"


class MinimalLoop:
    """The hand-written baseline: one AdamW step of eps-MSE on the VP-cosine process with a bare UNet2DModel."""

    def __init__(self, unet: torch.nn.Module, x: torch.Tensor, batch: int, precision: str, seed: int) -> None:
        self.unet, self.x, self.batch, self.precision = unet, x, batch, precision
        self.opt = torch.optim.AdamW(unet.parameters(), lr=2e-4)
        self.gen = torch.Generator().manual_seed(seed)
        self.device = x.device

    def step(self) -> None:
        rows = torch.randint(len(self.x), (self.batch,), generator=self.gen)
        t = torch.rand(self.batch, generator=self.gen).to(self.device)
        eps = torch.randn((self.batch, *self.x.shape[1:]), generator=self.gen).to(self.device)
        a, s = torch.cos(t * torch.pi / 2).view(-1, 1, 1, 1), torch.sin(t * torch.pi / 2).view(-1, 1, 1, 1)
        x0 = self.x[rows]
        with autocast(self.precision, self.device):
            pred = self.unet(a * x0 + s * eps, 1000 * t).sample
        loss = (pred.float() - eps).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def mnist_rows(n: int) -> torch.Tensor:
    from diffloss.data import load_dataset

    return torch.from_numpy(load_dataset("mnist").images()[:n]).float()


def measure(args: argparse.Namespace, device: torch.device, compile_: bool) -> dict:
    cfg = TrainConfig(
        data="mnist",
        process={"name": "vp-cosine"},
        target="eps",
        weighting={"name": "constant", "on": "eps"},
        density={"name": "uniform-t"},
        backbone={"name": "unet", "preset": args.preset},
        steps=10**9,
        batch=args.batch,
        warmup=0,
    )
    run = Run.create(cfg, execution=Execution(device, args.precision, compile_))
    unet = copy.deepcopy(run.model.net.net)  # the same UNet2DModel, same initial weights
    if compile_:
        unet.compile()
    minimal = MinimalLoop(unet, run.x, args.batch, args.precision, seed=1)
    # warm-up (compilation, allocator, first-touch)
    for _ in range(2):
        run.update()
        minimal.step()
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(per_call(run.update, args.steps, device))
        theirs.append(per_call(minimal.step, args.steps, device))
    ratios = [b[0] / a[0] for a, b in zip(ours, theirs)]
    cpu_ratios = [b[1] / a[1] for a, b in zip(ours, theirs)]
    params = sum(p.numel() for p in unet.parameters())
    return {
        "compile": compile_,
        "params": params,
        "diffloss_samples_per_s": statistics.median(args.batch / s[0] for s in ours),
        "minimal_samples_per_s": statistics.median(args.batch / s[0] for s in theirs),
        "ratio_median": statistics.median(ratios),
        "ratio_per_round": ratios,
        "cpu_ratio_median": statistics.median(cpu_ratios),
        "cpu_ratio_per_round": cpu_ratios,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="updates per timed round")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = every core")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--no-compile", action="store_true", help="measure eager only")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    threads = set_threads(args.threads)
    device = resolve_device(args.device)
    set_matmul_precision(args.precision)
    name = "cuda" if device.type == "cuda" else "cpu"
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    load = [os.getloadavg()[0]]
    rows = [measure(args, device, False)]
    if not args.no_compile:
        rows.append(measure(args, device, True))
    load.append(os.getloadavg()[0])
    result = {
        "device": str(device),
        "hardware": hardware,
        "torch": torch.__version__,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "preset": args.preset,
        "batch": args.batch,
        "precision": args.precision,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "load_avg_1min_before_after": load,
        "goal": ">= 0.95",
        "rows": rows,
    }
    out = Path(args.out) if args.out else RESULTS / ("train_throughput" + ("_cuda" if name == "cuda" else ""))
    write_json_atomic(out.with_suffix(".json"), result)
    lines = [
        f"# diffloss train vs a minimal PyTorch loop ({hardware}, {device})",
        "",
        f"UNet2DModel preset `{args.preset}`, MNIST 28x28, batch {args.batch}, AdamW, {args.precision}; torch "
        f"{torch.__version__}, {threads} thread(s); {args.rounds} alternating rounds of {args.steps} updates; "
        f"1-minute load average {load[0]:.2f} before, {load[1]:.2f} after. Command: "
        "`python benchmarks/train_throughput.py` (defaults above).",
        "",
        "Ratio = diffloss samples/s over the minimal loop's, per round; the CPU-time ratio counts process CPU seconds "
        "instead of wall seconds (steadier when other jobs share the cores).",
        "",
        "| network | params | diffloss samples/s | minimal samples/s | ratio (median) | per round | CPU-time ratio "
        "(median) | per round | goal >= 0.95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = ", ".join(f"{v:.3f}" for v in r["ratio_per_round"])
        cpu = ", ".join(f"{v:.3f}" for v in r["cpu_ratio_per_round"])
        ok = "met" if min(r["ratio_median"], r["cpu_ratio_median"]) >= 0.95 else "not met"
        lines.append(
            f"| {'torch.compile' if r['compile'] else 'eager'} | {r['params']:,} | {r['diffloss_samples_per_s']:.1f} "
            f"| {r['minimal_samples_per_s']:.1f} | {r['ratio_median']:.3f} | {per} | {r['cpu_ratio_median']:.3f} "
            f"| {cpu} | {ok} |"
        )
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
