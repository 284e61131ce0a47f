"""Training a ``diffloss train`` run in stages: up to a step, resuming from the run directory's checkpoint."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from diffloss.errors import DifflossError


def checkpoint_step(run_dir: str | os.PathLike) -> int:
    """The step of the ``diffloss train`` checkpoint in ``run_dir``, 0 if there is none."""
    from diffloss.checkpoint import load_checkpoint
    from diffloss.train import CHECKPOINT_FILE

    path = Path(run_dir) / CHECKPOINT_FILE
    return int(load_checkpoint(path)[1]["step"]) if path.exists() else 0


def train_to(config: Any, run_dir: str | os.PathLike, execution: Any = None) -> float:
    """Train the run of ``config`` (a ``diffloss.train.TrainConfig``) in ``run_dir`` up to ``config.steps``,
    resuming from its checkpoint (bit-exact) or starting afresh when there is none (files of a start killed before
    its first checkpoint are overwritten); returns the CPU seconds it took, 0 when the checkpoint is there already.
    A checkpoint beyond ``config.steps`` is an error: its earlier states are gone. ``execution``: where it computes
    (a ``diffloss.train.Execution``; default one CPU process); keep it the same across stages for bit-exact resumes."""
    from diffloss.train import train

    have = checkpoint_step(run_dir)
    if have > config.steps:
        raise DifflossError(f"{run_dir} is at step {have}, beyond {config.steps} whose results are missing; delete it")
    if have == config.steps:
        return 0.0
    cpu = time.process_time()
    train(config, run_dir, resume=have > 0, overwrite=have == 0, execution=execution)
    return time.process_time() - cpu
