"""Evaluate a finished bridge run's last checkpoint exactly as its final evaluation, but without the Sinkhorn cost.

Under heavy load the entropic OT solve (2000 log-domain iterations on 1000 x 1000 points) took longer than the
training itself; this writes ``metrics_no_sinkhorn.json`` beside the checkpoint with the same trajectories (the
final evaluation's seed, cfg.seed + 1000003 + iteration) and ``sinkhorn`` null.
Usage: python experiments/bridge_eval_without_sinkhorn.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from diffloss.bridge import CHECKPOINT, EVAL_SEED_OFFSET, BridgeRun
from diffloss.io import write_json_atomic


def main() -> None:
    torch.set_num_threads(1)
    for run_dir in map(Path, sys.argv[1:]):
        run = BridgeRun.load(run_dir / CHECKPOINT)
        result = run.evaluate(run.cfg.eval_n, run.cfg.seed + EVAL_SEED_OFFSET + run.iteration, sinkhorn=False)
        finished = run.iteration == run.cfg.iters  # else the run stopped early (diverged or interrupted)
        result.update(
            iterations=run.iteration, diverged_at=None if finished else "before the end", sinkhorn_skipped=True
        )
        write_json_atomic(run_dir / "metrics_no_sinkhorn.json", result)
        print(run_dir, {k: result[k] for k in ("elbo", "log_z", "ess", "mmd", "emc")}, flush=True)


if __name__ == "__main__":
    main()
