"""Training schedules compared at equal compute: constant, min-SNR-5, EDM, debiased and the optimal-loss schedule.

Every (schedule, seed) trains in its own run directory OUT/DATA/SCHEDULE/seedS with the same process, target,
backbone, steps and batch (equal training compute: steps * batch denoiser evaluations; the optimal schedule's
one-off J* computation is extra and cached). Each final model is then sampled (EMA weights, Heun, Karras
schedule) at 10, 20 and 50 steps and scored with `diffloss eval` (FID-proxy in the project classifier's feature
space), and, when `diffloss diagnose` exists, its per-level gap to J* is measured. Every step's output file is
skipped if present and an unfinished training run is resumed, so rerunning the command continues where it stopped.
OUT/DATA/summary.json and summary.md hold the FID mean +- std over seeds and the measured wall times.

Example: python experiments/schedule.py --data digits --steps 4000 --seeds 0,1,2 --out runs/schedule
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCHEDULES = {  # name: (--weighting, --density)
    "constant": ("constant:on=eps", "default"),
    "min-snr-5": ("min-snr:gamma=5", "default"),
    "edm": ("edm", "edm-lognormal"),
    "debiased": ("debiased", "default"),
    "optimal": ("optimal", "optimal"),
}
SAMPLING_STEPS = (10, 20, 50)


def diffloss(*args: str) -> None:
    """Run a diffloss subcommand with this interpreter; a failure stops the experiment with its message."""
    subprocess.run([sys.executable, "-m", "diffloss", *args], check=True)


def has_diagnose() -> bool:
    from diffloss.cli import cli

    return "diagnose" in cli.commands


def timed(run_dir: Path, key: str, *args: str) -> None:
    """Run ``diffloss ARGS`` and add its wall time to run_dir/timing.json under ``key``."""
    start = time.perf_counter()
    diffloss(*args)
    path = run_dir / "timing.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    times[key] = times.get(key, 0.0) + time.perf_counter() - start
    path.write_text(json.dumps(times, indent=1))


def finished_steps(run_dir: Path) -> int:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines() if (run_dir / "metrics.jsonl").exists() else []
    return max((json.loads(line)["step"] for line in lines), default=0)


def one_run(args: argparse.Namespace, schedule: str, seed: int) -> Path:
    run_dir = Path(args.out) / args.data / schedule / f"seed{seed}"
    weighting, density = SCHEDULES[schedule]
    train = ["train", "--data", args.data, "--process", "vp-cosine", "--target", "eps", "--weighting", weighting]
    train += ["--density", density, "--steps", str(args.steps), "--batch", str(args.batch), "--seed", str(seed)]
    train += ["--channels", str(args.channels), "--lr", str(args.lr), "--ckpt-every", "500", "--quiet"]
    train += ["--out", str(run_dir), *(["--resume"] if (run_dir / "checkpoint.safetensors").exists() else [])]
    if finished_steps(run_dir) < args.steps:
        timed(run_dir, "train", *train)
    for k in SAMPLING_STEPS:
        samples, score = run_dir / f"samples_{k}.npy", run_dir / f"eval_{k}.json"
        if not samples.exists():
            sample = ["sample", "--ckpt", str(run_dir), "--n", str(args.n_samples), "--steps", str(k), "--seed", "0"]
            timed(run_dir, f"sample_{k}", *sample, "--out", str(samples), "--quiet")
        if not score.exists():
            ev = ["eval", "--samples", str(samples), "--ref", args.data, "--metrics", "fid", "--json", str(score)]
            timed(run_dir, f"eval_{k}", *ev, "--quiet")
    gap = run_dir / "gap.json"
    if args.diagnose and not gap.exists():
        diag = ["diagnose", "--ckpt", str(run_dir), "--data", args.data, "--levels", "12", "--json", str(gap)]
        timed(run_dir, "diagnose", *diag, "--quiet")
    return run_dir


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarize(args: argparse.Namespace, runs: dict[str, list[Path]]) -> dict:
    summary: dict = {"args": vars(args), "schedules": {}}
    for schedule, dirs in runs.items():
        fid = {
            k: [json.loads((d / f"eval_{k}.json").read_text())["metrics"]["fid"]["value"] for d in dirs]
            for k in SAMPLING_STEPS
        }
        times = [json.loads((d / "timing.json").read_text()) for d in dirs]
        entry = {
            "fid": {str(k): mean_std(v) | {"values": v} for k, v in fid.items()},
            "train_seconds": mean_std([t["train"] for t in times]),
            "total_seconds": sum(sum(t.values()) for t in times),
        }
        if args.diagnose:
            entry["gap"] = [json.loads((d / "gap.json").read_text()) for d in dirs]
        summary["schedules"][schedule] = entry
    return summary


def table(summary: dict) -> str:
    head = "| schedule | " + " | ".join(f"FID @ {k} steps" for k in SAMPLING_STEPS) + " | train s/run |"
    rows = [head, "|" + "---|" * (len(SAMPLING_STEPS) + 2)]
    for name, e in summary["schedules"].items():
        cells = [f"{e['fid'][str(k)]['mean']:.3g} ± {e['fid'][str(k)]['std']:.2g}" for k in SAMPLING_STEPS]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {e['train_seconds']['mean']:.0f} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits", help="digits (8x8) or mnist (28x28)")
    p.add_argument("--steps", type=int, default=4000, help="training updates per run (equal for all schedules)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--channels", type=int, default=32, help="UNet base width")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--schedules", default=",".join(SCHEDULES))
    p.add_argument("--n-samples", type=int, default=1000, help="samples per FID evaluation")
    p.add_argument("--out", default="runs/schedule")
    args = p.parse_args()
    args.diagnose = has_diagnose()
    if not args.diagnose:
        print("diffloss diagnose is not available: skipping the per-level gap curves", file=sys.stderr)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.schedules.split(",")
    unknown = sorted(set(names) - set(SCHEDULES))
    if unknown:
        p.error(f"unknown schedule(s) {unknown}; choose from {', '.join(SCHEDULES)}")
    runs = {name: [one_run(args, name, seed) for seed in seeds] for name in names}
    summary = summarize(args, runs)
    out = Path(args.out) / args.data
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(table(summary))
    print(table(summary))


if __name__ == "__main__":
    main()
