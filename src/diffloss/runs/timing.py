"""Wall and CPU seconds of a piece of work, appended as one JSON line to a log.

Each finished ``with timed(log, key):`` block appends ``{"cell": key, "wall_s": ..., "cpu_s": ...}`` to the JSONL
file ``log`` (``time.perf_counter`` and ``time.process_time``: this process's CPU time, insensitive to other jobs
sharing the cores). A block that raises records nothing. A resumed piece of work adds a line; ``read_timing``
sums the lines per key.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TIMING_FILE = "timing.jsonl"


@contextmanager
def timed(log: str | os.PathLike, key: str) -> Iterator[None]:
    """Time the ``with`` block and append its line to ``log`` when it finishes without an exception."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    line = {"cell": key, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def per_call(fn: Callable[[], object], calls: int, device: Any = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) per call of ``fn``, averaged over ``calls`` calls. On a CUDA
    ``device`` (a ``torch.device``) queued work is drained before and after, so the clocks time the work itself, not
    its launch. On a CPU shared with other jobs the CPU seconds are the steadier measure."""
    import torch

    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def read_timing(log: str | os.PathLike) -> dict[str, dict[str, float]]:
    """``{key: {"wall": seconds, "cpu": seconds}}`` summed over the lines of ``log`` ({} when it does not exist)."""
    log = Path(log)
    out: dict[str, dict[str, float]] = {}
    if not log.exists():
        return out
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            entry = out.setdefault(rec["cell"], {"wall": 0.0, "cpu": 0.0})
            entry["wall"] += rec["wall_s"]
            entry["cpu"] += rec["cpu_s"]
    return out
