"""Shared test helpers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

torch.set_num_threads(1)


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run ``python -m diffloss ARGS`` in a subprocess (as a user would), capturing output."""
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-m", "diffloss", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


@pytest.fixture
def cli():
    return run_cli
